"""FCN baseline: dilated backbone + a small conv head + bilinear upsampling."""

import keras

from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.models.base import (
    SegmentationModel,
    classifier,
    resolve_backbone,
)
from keras_deeplab.utils import register


@register
class FCN(SegmentationModel):
    """Fully convolutional baseline (no ASPP, no decoder).

    Stages: backbone C5 -> 3x3 conv-BN-ReLU (``head_filters``) -> dropout -> 1x1 classifier ->
    bilinear upsampling. At output stride 32 it is the FCN-32s of Long et al. with a
    ResNet; at 8 it is the dilated FCN that DeepLab's ablations start from.

    Args:
        num_classes: int. Number of classes.
        backbone: str or `keras_deeplab.backbones.Backbone`. Defaults to "resnet50".
        output_stride: int or None. None means 32.
        backbone_weights: None, "imagenet" or a weights-file path. Defaults to None.
        head_filters: int or None. None uses a quarter of the backbone's channels.
        dropout: float. Defaults to 0.1.
        backbone_kwargs: dict or None. Extra backbone arguments.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Raises:
        ValueError: for a backbone instance together with an ``output_stride``,
            ``multi_grid`` or ``backbone_kwargs`` that the instance does not have.

    Example:
    >>> model = FCN(num_classes=19, backbone="resnet50", output_stride=8)

    Reference: Long et al., "Fully Convolutional Networks for Semantic Segmentation",
    CVPR 2015.
    """

    def __init__(
        self,
        num_classes,
        backbone="resnet50",
        output_stride=None,
        backbone_weights=None,
        head_filters=None,
        dropout=0.1,
        backbone_kwargs=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        original = backbone
        if output_stride is None and not isinstance(backbone, keras.Model):
            output_stride = 32
        backbone, output_stride = resolve_backbone(
            backbone, output_stride, None, backbone_weights, backbone_kwargs
        )
        inputs = keras.Input(shape=input_shape, name="images")
        x = backbone(inputs)["C5"]
        filters = head_filters or max(x.shape[-1] // 4, 8)
        x = ConvBNReLU(filters, 3, name="fcn_head")(x)
        x = keras.layers.Dropout(dropout, name="fcn_dropout")(x)
        outputs = classifier(x, inputs, num_classes, name="logits")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            head_filters=head_filters,
            dropout=dropout,
            input_shape=tuple(input_shape),
        )
