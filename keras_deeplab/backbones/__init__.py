"""Backbones returning dicts of feature maps C2..C5, with output stride set by dilation.

The contract every backbone follows (feature keys, strides, config) is `Backbone`
(``keras_deeplab/backbones/base.py``).
"""

from keras_deeplab.backbones.base import FEATURE_KEYS, Backbone, feature_strides
from keras_deeplab.backbones.mobilenet_v2 import MobileNetV2Backbone
from keras_deeplab.backbones.mobilenet_v3 import MobileNetV3LargeBackbone
from keras_deeplab.backbones.resnet import DEPTHS, ResNetBackbone
from keras_deeplab.backbones.resnet_torchvision import TorchvisionResNetBackbone
from keras_deeplab.backbones.vgg import VGG16Backbone
from keras_deeplab.backbones.weights import load_imagenet_weights
from keras_deeplab.backbones.xception import Xception65Backbone

NAMES = tuple(f"resnet{d}" for d in sorted(DEPTHS)) + (
    "vgg16", "mobilenetv2", "mobilenetv3_large", "xception65")


def _no_xception_imagenet_weights(weights):
    raise ValueError(
        f"backbone_weights={weights!r}: Xception-65 has no keras.applications ImageNet "
        "weights to load into the backbone (keras.applications' Xception is the unaligned "
        "classification network, another layout). Train from scratch with "
        "backbone_weights=None, or start from a TensorFlow DeepLab model-zoo checkpoint: "
        "kd.models.from_pretrained('deeplabv3plus_xception65.tf_voc_trainaug') (or "
        ".tf_cityscapes_trainfine, .tf_ade20k), which loads its model.ckpt by TF variable name.")


def get_backbone(backbone, output_stride=16, multi_grid=None, weights=None, **kwargs):
    """Builds a backbone by name (or checks a given one) and loads its weights.

    Args:
        backbone: str or Backbone. One of ``NAMES`` or a `Backbone` instance (returned
            as is, with only ``weights`` applied).
        output_stride: int. 8, 16 or 32. Defaults to 16.
        multi_grid: tuple or None. ResNet: last-stage rate multipliers (one per unit);
            xception65: the 3 rate multipliers of exit_flow/block2's separable convs.
        weights: None, "imagenet" or a weights-file path (keras.applications layout).
            xception65 has none: any value other than None raises ValueError naming
            ``kd.models.from_pretrained`` and the model-zoo checkpoints.
        **kwargs: Passed to the backbone class (e.g. ``base_filters`` for ResNet).

    Example:
    >>> backbone = get_backbone("resnet101", output_stride=8, multi_grid=(1, 2, 4))
    """
    if weights is not None and (isinstance(backbone, Xception65Backbone)
                                or (isinstance(backbone, str) and backbone.lower() == "xception65")):
        _no_xception_imagenet_weights(weights)
    if isinstance(backbone, Backbone):
        model = backbone
    elif not isinstance(backbone, str) or backbone.lower() not in NAMES:
        raise ValueError(
            f"Unknown backbone {backbone!r}; expected one of {NAMES} or a backbone instance "
            "(ResNetBackbone, VGG16Backbone, MobileNetV2Backbone, MobileNetV3LargeBackbone, "
            "Xception65Backbone)."
        )
    else:
        name = backbone.lower()
        if name.startswith("resnet"):
            model = ResNetBackbone(
                depth=int(name[6:]), output_stride=output_stride, multi_grid=multi_grid,
                name=name, **kwargs,
            )
        elif name == "xception65":
            # Named "xception_65" (its default: the TF top scope), so TF checkpoint variables
            # map onto it by layer name.
            model = Xception65Backbone(output_stride=output_stride, multi_grid=multi_grid, **kwargs)
        else:
            if multi_grid is not None:
                raise ValueError(f"multi_grid applies to ResNet and xception65 backbones only, "
                                 f"not {name!r}.")
            cls = {"vgg16": VGG16Backbone, "mobilenetv2": MobileNetV2Backbone,
                   "mobilenetv3_large": MobileNetV3LargeBackbone}[name]
            model = cls(output_stride=output_stride, name=name, **kwargs)
    if weights is not None:
        load_imagenet_weights(model, weights)
    return model


__all__ = [
    "Backbone",
    "FEATURE_KEYS",
    "NAMES",
    "MobileNetV2Backbone",
    "MobileNetV3LargeBackbone",
    "ResNetBackbone",
    "TorchvisionResNetBackbone",
    "VGG16Backbone",
    "Xception65Backbone",
    "feature_strides",
    "get_backbone",
    "load_imagenet_weights",
]
