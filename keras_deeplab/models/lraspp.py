"""LR-ASPP (Lite Reduced ASPP): the segmentation head of MobileNetV3, as torchvision builds it.

Registered with `keras_deeplab.pretrained` as the architecture ``lraspp_mobilenet_v3_large``
(torchvision's checkpoint converts one to one: layer names are torchvision's module names,
with "-" for ".").
"""

import keras

from keras_deeplab.backbones.mobilenet_v3 import MobileNetV3LargeBackbone
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.models.base import SegmentationModel, resolve_backbone
from keras_deeplab.pretrained.convert import torch_named_layers
from keras_deeplab.pretrained.registry import register_architecture
from keras_deeplab.utils import register


def lraspp_head(low, high, reference, num_classes, inter_channels=128, bn_momentum=0.9):
    """torchvision's ``LRASPPHead`` followed by the resize to the input (``LRASPP.forward``).

    ``cbr``: 1x1 conv (no bias) -> BN (epsilon 1e-5) -> ReLU on ``high``, multiplied by
    ``scale``: global average pooling -> 1x1 conv (no bias) -> sigmoid on ``high``; bilinear
    resize (half-pixel centres) to ``low``'s size; ``low_classifier(low) +
    high_classifier(x)`` (1x1 convs with bias); bilinear resize to ``reference``.
    The pooling is global (any input size, TFLite included).

    Layer names are torchvision's module names with "-" for "." (``classifier-cbr-0`` /
    ``classifier-cbr-1`` conv / BN, ``classifier-scale-1``, ``classifier-low_classifier``,
    ``classifier-high_classifier``); the float32 output layer is ``logits``.
    """
    x = keras.layers.Conv2D(inter_channels, 1, use_bias=False,
                            name="classifier-cbr-0")(high)
    x = BatchNormalization(epsilon=1e-5, momentum=bn_momentum,
                           name="classifier-cbr-1")(x)
    x = keras.layers.ReLU(name="classifier-cbr-2")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="classifier-scale-0")(high)
    s = keras.layers.Conv2D(inter_channels, 1, use_bias=False,
                            name="classifier-scale-1")(s)
    s = keras.layers.Activation("sigmoid", name="classifier-scale-2")(s)
    x = keras.layers.Multiply(name="classifier-gate")([x, s])
    x = ResizeLike(name="classifier-upsample")([x, low])
    low_logits = keras.layers.Conv2D(num_classes, 1,
                                     name="classifier-low_classifier")(low)
    high_logits = keras.layers.Conv2D(num_classes, 1,
                                      name="classifier-high_classifier")(x)
    x = keras.layers.Add(name="classifier-sum")([low_logits, high_logits])
    x = ResizeLike(name="logits-resize")([x, reference])
    return keras.layers.Activation("linear", dtype="float32", name="logits")(x)


@register
class LRASPP(SegmentationModel):
    """LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling) segmentation model.

    torchvision's ``lraspp_mobilenet_v3_large``: backbone (MobileNetV3-Large, output stride
    16) -> head on two features: the last one (``"C5"``, 960 channels, stride 16) through a
    1x1 conv-BN-ReLU gated by a sigmoid of its global average, upsampled to the stride-8
    ``low_feature`` (``"low"``: torchvision's ``features[4]``, 40 channels); one 1x1
    classifier on each, summed -> bilinear resize to the input (see `lraspp_head`).
    Float RGB in [0, 255] in (the backbone normalises), float32 logits
    ``(B, H, W, num_classes)`` out. No auxiliary head (torchvision has none).

    Args:
        num_classes: int. Number of classes. Defaults to 21 (Pascal VOC).
        backbone: str or `keras_deeplab.backbones.Backbone`. Defaults to
            "mobilenetv3_large".
        output_stride: int or None. 8, 16 or 32; None means 16 (torchvision's).
        backbone_weights: None, "imagenet" or a weights-file path, for backbones with
            keras.applications weights (not MobileNetV3: for torchvision's trained model use
            ``kd.models.from_pretrained``). Defaults to None.
        inter_channels: int. Channels of the gated high-level branch. Defaults to 128.
        low_feature: str. Backbone feature key of the low-level input. Defaults to "low".
        backbone_kwargs: dict or None. Extra backbone arguments.
        input_shape: tuple. Defaults to (None, None, 3).
        class_names: list of str or None. Stored with the model. Defaults to None.
        palette: palette name or colours, or None. Stored with the model. Defaults to None.
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Raises:
        ValueError: the backbone has no feature ``low_feature`` (the message lists its
            keys), or an instance is given with a different ``output_stride``.

    Example:
    >>> model = LRASPP(num_classes=21)
    >>> logits = model(images)   # images (B, H, W, 3) in [0, 255] -> (B, H, W, 21)
    >>> # torchvision's weights: kd.models.from_pretrained("lraspp_mobilenet_v3_large.torchvision_coco_voc")

    Reference: Howard et al., "Searching for MobileNetV3", ICCV 2019, section 6.1.2;
    torchvision ``torchvision/models/segmentation/lraspp.py``.
    """

    def __init__(
        self,
        num_classes=21,
        backbone="mobilenetv3_large",
        output_stride=None,
        backbone_weights=None,
        inter_channels=128,
        low_feature="low",
        backbone_kwargs=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        original = backbone
        backbone, output_stride = resolve_backbone(
            backbone, output_stride, None, backbone_weights, backbone_kwargs
        )
        inputs = keras.Input(shape=input_shape, name="images")
        features = backbone(inputs)
        if low_feature not in features:
            raise ValueError(
                f"LRASPP: low_feature={low_feature!r} is not a feature of backbone "
                f"{backbone.name!r} (it has {sorted(features)}); pass one of those.")
        outputs = lraspp_head(features[low_feature], features["C5"], inputs, num_classes,
                              inter_channels)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            inter_channels=inter_channels,
            low_feature=low_feature,
            input_shape=tuple(input_shape),
        )


def build_lraspp_mobilenet_v3_large(num_classes, aux=False, class_names=None, palette=None):
    """torchvision's ``lraspp_mobilenet_v3_large`` as an `LRASPP` whose backbone sub-model is
    named "backbone" (so every layer is named after its state_dict key).

    Raises:
        ValueError: ``aux`` true (torchvision's LR-ASPP has no auxiliary head).
    """
    if aux:
        raise ValueError("lraspp_mobilenet_v3_large has no auxiliary head (torchvision raises "
                         "NotImplementedError for aux_loss=True); pass aux=False.")
    backbone = MobileNetV3LargeBackbone(output_stride=16, name="backbone")
    return LRASPP(num_classes=num_classes, backbone=backbone, class_names=class_names,
                  palette=palette, name="lraspp_mobilenet_v3_large")


register_architecture("lraspp_mobilenet_v3_large", build_lraspp_mobilenet_v3_large,
                      torch_named_layers)
