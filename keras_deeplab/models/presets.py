"""Architecture presets (configurations, no weight download) and output-stride changes."""

import copy

from keras_deeplab.models.deeplab_v2 import DeepLabV2
from keras_deeplab.models.deeplab_v3 import DeepLabV3
from keras_deeplab.models.deeplab_v3_plus import DeepLabV3Plus
from keras_deeplab.models.fcn import FCN

PRESETS = {
    "deeplabv3plus_resnet101_cityscapes": (
        DeepLabV3Plus, dict(num_classes=19, backbone="resnet101", output_stride=16, multi_grid=(1, 2, 4)),
    ),
    "deeplabv3plus_resnet50_cityscapes": (
        DeepLabV3Plus, dict(num_classes=19, backbone="resnet50", output_stride=16),
    ),
    "deeplabv3plus_mobilenetv2_cityscapes": (
        DeepLabV3Plus, dict(num_classes=19, backbone="mobilenetv2", output_stride=16),
    ),
    "deeplabv3plus_resnet101_voc": (
        DeepLabV3Plus, dict(num_classes=21, backbone="resnet101", output_stride=16),
    ),
    "deeplabv3_resnet101_cityscapes": (
        DeepLabV3, dict(num_classes=19, backbone="resnet101", output_stride=16, multi_grid=(1, 2, 4)),
    ),
    "deeplabv3_resnet50_voc": (
        DeepLabV3, dict(num_classes=21, backbone="resnet50", output_stride=16, multi_grid=(1, 2, 4)),
    ),
    "deeplabv3_mobilenetv2_voc": (
        DeepLabV3, dict(num_classes=21, backbone="mobilenetv2", output_stride=16),
    ),
    "deeplabv2_resnet101_voc": (DeepLabV2, dict(num_classes=21, backbone="resnet101")),
    "deeplab_largefov_vgg16_voc": (
        DeepLabV2, dict(num_classes=21, backbone="vgg16", aspp_rates=(12,)),
    ),
    "fcn_resnet50_cityscapes": (FCN, dict(num_classes=19, backbone="resnet50", output_stride=8)),
    # Small enough to train on a laptop CPU in minutes: tests, the demo, smoke runs.
    "deeplabv3plus_tiny": (
        DeepLabV3Plus,
        dict(
            num_classes=6, backbone="resnet18", output_stride=16,
            backbone_kwargs={"base_filters": 16}, aspp_filters=48, decoder_filters=48,
            low_level_filters=16,
        ),
    ),
}


def from_preset(name, **overrides):
    """Builds a model from a named architecture preset; keyword arguments override it.

    Args:
        name: str. One of ``keras_deeplab.models.PRESETS``.
        **overrides: Constructor arguments that replace the preset's (e.g.
            ``num_classes``, ``backbone_weights="imagenet"``, ``output_stride=8``).

    Example:
    >>> model = from_preset("deeplabv3plus_resnet101_cityscapes", backbone_weights="imagenet")
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; available presets: {sorted(PRESETS)}.")
    cls, config = PRESETS[name]
    config = {**copy.deepcopy(config), **overrides}
    return cls(**config)


def with_output_stride(model, output_stride):
    """Returns a copy of ``model`` with another output stride and the same weights.

    Dilation adds no parameters, so a model trained at OS16 can be evaluated at OS8
    (rates doubled: more accurate, ~3x the compute). Explicit ``aspp_rates`` are scaled by
    the ratio of the strides (``max(1, rate * old // new)``), so that every ASPP branch
    keeps its field of view in input pixels; this holds for every model with ASPP rates,
    DeepLabV2 included (its rates, default (6, 12, 18, 24), are defined at its OS8 and
    become (3, 6, 9, 12) at OS16). Default rates (None) follow the new stride.

    Args:
        model: a `SegmentationModel` whose config has ``output_stride`` (DeepLabV2/V3/V3+,
            FCN).
        output_stride: int. 8, 16 or 32.

    Raises:
        ValueError: if ``model`` has no output stride (UNet, PixelClassifier).

    Example:
    >>> eval_model = with_output_stride(trained_os16_model, 8)
    """
    config = copy.deepcopy(model.get_config())
    if "output_stride" not in config:
        raise ValueError(f"{type(model).__name__} has no output stride to change.")
    old = config["output_stride"]
    config["output_stride"] = output_stride
    if isinstance(config.get("backbone"), dict):
        config["backbone"]["config"]["output_stride"] = output_stride
    if config.get("aspp_rates") is not None:
        config["aspp_rates"] = tuple(max(1, r * old // output_stride) for r in config["aspp_rates"])
    new = type(model).from_config(config)
    new.set_weights(model.get_weights())
    return new


def list_presets():
    """Names of the available presets."""
    return sorted(PRESETS)


__all__ = ["PRESETS", "from_preset", "list_presets", "with_output_stride"]
