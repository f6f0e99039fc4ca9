"""DeepLabv3 on MobileNetV3-Large, as torchvision builds ``deeplabv3_mobilenet_v3_large``.

Registered with `keras_deeplab.pretrained` as the architecture ``deeplabv3_mobilenet_v3_large``
(torchvision's checkpoint converts one to one: layer names are torchvision's module names).
"""

import keras

from keras_deeplab.backbones.mobilenet_v3 import MobileNetV3LargeBackbone
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.models.base import SegmentationModel, resolve_backbone
from keras_deeplab.models.torchvision_segmentation import (
    TORCHVISION_ASPP_RATES,
    deeplab_head,
    fcn_head,
)
from keras_deeplab.pretrained.convert import torch_named_layers
from keras_deeplab.pretrained.registry import register_architecture
from keras_deeplab.utils import register


def _upsample(x, reference, name):
    x = ResizeLike(name=f"{name}-resize")([x, reference])  # bilinear, align_corners=False
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


@register
class DeepLabV3MobileNetV3(SegmentationModel):
    """DeepLabv3 with torchvision's head on a MobileNetV3-Large backbone.

    torchvision's ``deeplabv3_mobilenet_v3_large`` (``segmentation/deeplabv3.py``):
    backbone (output stride 16) -> torchvision's ``DeepLabHead``
    (`keras_deeplab.models.torchvision_segmentation.deeplab_head`) on the last feature
    (``"C5"``, 960 channels): ASPP (1x1, three 3x3 atrous branches at rates 12/24/36, image
    pooling; 256 channels each, concatenated, 1x1 projection, dropout 0.5) -> 3x3
    conv-BN-ReLU -> 1x1 classifier -> bilinear resize (half-pixel centres) to the input.
    The optional auxiliary head is torchvision's ``FCNHead`` (`fcn_head`) on
    ``aux_feature`` (``"low"``: torchvision's ``features[4]``, 40 channels, stride 8): 3x3
    conv-BN-ReLU to a quarter of its channels, dropout 0.1, 1x1 classifier.

    Float RGB in [0, 255] in (the backbone normalises), float32 logits
    ``(B, H, W, num_classes)`` out, or ``{"logits", "aux_logits"}`` with ``aux_head``.

    Args:
        num_classes: int. Number of classes. Defaults to 21 (Pascal VOC).
        backbone: str or `keras_deeplab.backbones.Backbone`. Defaults to
            "mobilenetv3_large".
        output_stride: int or None. 8, 16 or 32; None means 16 (torchvision's).
        backbone_weights: None, "imagenet" or a weights-file path, for backbones with
            keras.applications weights (not MobileNetV3: for torchvision's trained model use
            ``kd.models.from_pretrained``). Defaults to None.
        aux_head: bool. torchvision's auxiliary FCN head (``aux_loss=True``). Defaults to
            False.
        aux_feature: str. Backbone feature key of the auxiliary head. Defaults to "low".
        backbone_kwargs: dict or None. Extra backbone arguments.
        input_shape: tuple. Defaults to (None, None, 3).
        class_names: list of str or None. Stored with the model. Defaults to None.
        palette: palette name or colours, or None. Stored with the model. Defaults to None.
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Raises:
        ValueError: the backbone has no feature ``aux_feature`` (with ``aux_head``; the
            message lists its keys), or an instance is given with a different
            ``output_stride``.

    Example:
    >>> model = DeepLabV3MobileNetV3(num_classes=21, aux_head=True)
    >>> out = model(images)   # {"logits": (B, H, W, 21), "aux_logits": (B, H, W, 21)}
    >>> # torchvision's weights: kd.models.from_pretrained("deeplabv3_mobilenet_v3_large.torchvision_coco_voc")

    Reference: Chen et al., "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv:1706.05587, 2017; Howard et al., "Searching for MobileNetV3",
    ICCV 2019; torchvision ``torchvision/models/segmentation/deeplabv3.py``.
    """

    def __init__(
        self,
        num_classes=21,
        backbone="mobilenetv3_large",
        output_stride=None,
        backbone_weights=None,
        aux_head=False,
        aux_feature="low",
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
        x = deeplab_head(features["C5"], num_classes, rates=TORCHVISION_ASPP_RATES)
        outputs = _upsample(x, inputs, "logits")
        if aux_head:
            if aux_feature not in features:
                raise ValueError(
                    f"DeepLabV3MobileNetV3: aux_feature={aux_feature!r} is not a feature of "
                    f"backbone {backbone.name!r} (it has {sorted(features)}); pass one of those.")
            aux = fcn_head(features[aux_feature], num_classes, "aux_classifier")
            outputs = {"logits": outputs, "aux_logits": _upsample(aux, inputs, "aux_logits")}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            aux_head=bool(aux_head),
            aux_feature=aux_feature,
            input_shape=tuple(input_shape),
        )


def build_deeplabv3_mobilenet_v3_large(num_classes, aux=True, class_names=None, palette=None):
    """torchvision's ``deeplabv3_mobilenet_v3_large`` (``aux``: ``aux_loss=True``, as its
    published checkpoint) as a `DeepLabV3MobileNetV3` whose backbone sub-model is named
    "backbone" (so every layer is named after its state_dict key)."""
    backbone = MobileNetV3LargeBackbone(output_stride=16, name="backbone")
    return DeepLabV3MobileNetV3(num_classes=num_classes, backbone=backbone, aux_head=bool(aux),
                                class_names=class_names, palette=palette,
                                name="deeplabv3_mobilenet_v3_large")


register_architecture("deeplabv3_mobilenet_v3_large", build_deeplabv3_mobilenet_v3_large,
                      torch_named_layers)
