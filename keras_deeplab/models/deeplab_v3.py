"""DeepLabv3: ASPP with image-level pooling on a dilated backbone (with multi-grid)."""

import keras

from keras_deeplab.layers.aspp import ASPP
from keras_deeplab.models.base import (
    SegmentationModel,
    aux_classifier,
    classifier,
    default_aspp_rates,
    resolve_backbone,
)
from keras_deeplab.utils import register


@register
class DeepLabV3(SegmentationModel):
    """DeepLabv3 semantic segmentation model.

    Stages (see `keras_deeplab.models.base`): backbone C5 (multi-grid on the last stage)
    -> ASPP (1x1, three 3x3 atrous branches,
    image pooling, concatenated and projected) -> 1x1 classifier -> bilinear resize to the
    input. Float RGB in [0, 255] in, float32 logits ``(B, H, W, num_classes)`` out.

    Args:
        num_classes: int. Number of classes.
        backbone: str or `keras_deeplab.backbones.Backbone`. Defaults to "resnet50".
        output_stride: int or None. 8, 16 or 32; None means 16.
        backbone_weights: None, "imagenet" or a weights-file path. Defaults to None.
        multi_grid: tuple or None. e.g. (1, 2, 4) (the paper's best). Defaults to None.
        aspp_rates: tuple or None. None follows the output stride.
        aspp_filters: int. Defaults to 256.
        aspp_dropout: float. Defaults to 0.1.
        separable: bool. Depthwise-separable ASPP convs. Defaults to False.
        aux_head: bool. Auxiliary classifier on stride-16 features. Defaults to False.
        backbone_kwargs: dict or None. Extra backbone arguments.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Raises:
        ValueError: for a backbone instance together with an ``output_stride``,
            ``multi_grid`` or ``backbone_kwargs`` that the instance does not have.

    Example:
    >>> model = DeepLabV3(num_classes=21, backbone="resnet50", output_stride=8,
    ...                   multi_grid=(1, 2, 4))

    Reference: Chen et al., "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv:1706.05587, 2017.
    """

    def __init__(
        self,
        num_classes,
        backbone="resnet50",
        output_stride=None,
        backbone_weights=None,
        multi_grid=None,
        aspp_rates=None,
        aspp_filters=256,
        aspp_dropout=0.1,
        separable=False,
        aux_head=False,
        backbone_kwargs=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        original = backbone
        backbone, output_stride = resolve_backbone(
            backbone, output_stride, multi_grid, backbone_weights, backbone_kwargs
        )
        rates = tuple(aspp_rates) if aspp_rates is not None else default_aspp_rates(output_stride)
        inputs = keras.Input(shape=input_shape, name="images")
        features = backbone(inputs)
        x = ASPP(aspp_filters, rates, dropout=aspp_dropout, separable=separable, name="aspp")(
            features["C5"]
        )
        outputs = classifier(x, inputs, num_classes, name="logits")
        if aux_head:
            aux = aux_classifier(features["C4"], inputs, num_classes)
            outputs = {"logits": outputs, "aux_logits": aux}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            multi_grid=tuple(multi_grid) if multi_grid is not None else None,
            aspp_rates=tuple(aspp_rates) if aspp_rates is not None else None,
            aspp_filters=aspp_filters,
            aspp_dropout=aspp_dropout,
            separable=separable,
            aux_head=aux_head,
            input_shape=tuple(input_shape),
        )
