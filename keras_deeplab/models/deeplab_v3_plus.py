"""DeepLabv3+: ASPP encoder on a dilated backbone, plus a decoder on stride-4 features."""

import keras

from keras_deeplab.layers.aspp import ASPP
from keras_deeplab.layers.decoder import DeepLabV3PlusDecoder
from keras_deeplab.models.base import (
    SegmentationModel,
    aux_classifier,
    classifier,
    default_aspp_rates,
    resolve_backbone,
)
from keras_deeplab.utils import register


@register
class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ semantic segmentation model.

    Stages (see `keras_deeplab.models.base`): backbone C5 -> ASPP neck (image pooling,
    rates following the output stride) -> decoder (stride-4 backbone features C2
    projected to 48 channels, two 3x3 convs) -> 1x1 classifier -> bilinear resize to the
    input. Takes float RGB images in [0, 255] of any size (normalisation is inside) and returns float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int. Number of classes (the ignore label is not one of them).
        backbone: str or `keras_deeplab.backbones.Backbone`. "resnet18/34/50/101/152", "mobilenetv2", "vgg16",
            "xception65" (DeepLab's aligned Xception-65, trained from scratch; the model
            zoo's exact graph and weights are `TFDeepLab` / ``from_pretrained``) or a
            backbone instance. Defaults to "resnet50".
        output_stride: int or None. 8, 16 or 32; None means 16 (or the instance's).
        backbone_weights: None, "imagenet" or a keras.applications weights file.
            Defaults to None. Not kept in the config (weights are saved with the model).
        multi_grid: tuple or None. ResNet last-stage rate multipliers, e.g. (1, 2, 4).
        aspp_rates: tuple or None. None follows the output stride (6/12/18 at OS16).
        aspp_filters: int. Defaults to 256.
        aspp_dropout: float. Defaults to 0.1.
        separable: bool. Depthwise-separable ASPP and decoder convs. Defaults to False.
        decoder_filters: int. Defaults to 256.
        low_level_filters: int. Defaults to 48.
        decoder_convs: int. Defaults to 2.
        aux_head: bool. Add an auxiliary classifier on the stride-16 features; the model
            then returns ``{"logits", "aux_logits"}``. Defaults to False.
        backbone_kwargs: dict or None. Extra backbone arguments (e.g. ``base_filters``).
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Raises:
        ValueError: for a backbone instance together with an ``output_stride``,
            ``multi_grid`` or ``backbone_kwargs`` that the instance does not have.

    Example:
    >>> model = DeepLabV3Plus(num_classes=19, backbone="resnet101", output_stride=16)
    >>> logits = model(images)   # (B, H, W, 19)

    Reference: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for
    Semantic Image Segmentation", ECCV 2018.
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
        decoder_filters=256,
        low_level_filters=48,
        decoder_convs=2,
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
        x = DeepLabV3PlusDecoder(
            decoder_filters, low_level_filters, decoder_convs, separable=separable, name="decoder"
        )([x, features["C2"]])
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
            decoder_filters=decoder_filters,
            low_level_filters=low_level_filters,
            decoder_convs=decoder_convs,
            aux_head=aux_head,
            input_shape=tuple(input_shape),
        )
