"""DeepLabv2: ASPP with summed per-rate classifiers (ResNet-101 or VGG-16 LargeFOV)."""

import keras

from keras_deeplab.backbones.vgg import VGG16Backbone
from keras_deeplab.layers.aspp_v2 import ASPPV2
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.models.base import SegmentationModel, resolve_backbone
from keras_deeplab.utils import register


@register
class DeepLabV2(SegmentationModel):
    """DeepLabv2 semantic segmentation model.

    Stages (see `keras_deeplab.models.base`): backbone C5 -> ASPP-v2 neck whose branches
    end in their own classifiers -> bilinear resize to the input. The backbone runs at
    output stride 8; ASPP in its v2 form has one classifier per atrous rate, their logits
    summed, then bilinear upsampling. With a ResNet each branch is a single 3x3 atrous
    conv; with VGG-16 each branch is fc6 (3x3 atrous, 1024) - fc7 (1x1, 1024) - fc8. ``backbone="vgg16", aspp_rates=(12,)`` is
    DeepLab-LargeFOV. Refine the output with ``keras_deeplab.inference.DenseCRF`` as in
    the paper.

    Args:
        num_classes: int. Number of classes.
        backbone: str or `keras_deeplab.backbones.Backbone`. Defaults to "resnet101".
        output_stride: int or None. None means 8 (the paper's setting).
        backbone_weights: None, "imagenet" or a weights-file path. Defaults to None.
        aspp_rates: tuple. Defaults to (6, 12, 18, 24) (ASPP-L).
        head: str or None. "conv" or "fc"; None picks "fc" for VGG, else "conv".
        fc_filters: int. fc6/fc7 width of the "fc" head. Defaults to 1024.
        dropout: float. fc-head dropout. Defaults to 0.5.
        backbone_kwargs: dict or None. Extra backbone arguments.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Raises:
        ValueError: for a backbone instance together with an ``output_stride``,
            ``multi_grid`` or ``backbone_kwargs`` that the instance does not have.

    Example:
    >>> resnet = DeepLabV2(num_classes=21, backbone="resnet101")
    >>> largefov = DeepLabV2(num_classes=21, backbone="vgg16", aspp_rates=(12,))

    Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
    Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017.
    """

    def __init__(
        self,
        num_classes,
        backbone="resnet101",
        output_stride=None,
        backbone_weights=None,
        aspp_rates=(6, 12, 18, 24),
        head=None,
        fc_filters=1024,
        dropout=0.5,
        backbone_kwargs=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        original = backbone
        if output_stride is None and not isinstance(backbone, keras.Model):
            output_stride = 8
        backbone, output_stride = resolve_backbone(
            backbone, output_stride, None, backbone_weights, backbone_kwargs
        )
        if head is None:
            head = "fc" if isinstance(backbone, VGG16Backbone) else "conv"
        inputs = keras.Input(shape=input_shape, name="images")
        features = backbone(inputs)
        x = ASPPV2(
            num_classes, aspp_rates, head=head, fc_filters=fc_filters, dropout=dropout, name="aspp_v2"
        )(features["C5"])
        x = ResizeLike(name="logits_upsample")([x, inputs])
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            aspp_rates=tuple(aspp_rates),
            head=head,
            fc_filters=fc_filters,
            dropout=dropout,
            input_shape=tuple(input_shape),
        )
