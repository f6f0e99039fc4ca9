"""Load keras.applications ImageNet weights into the dilated backbones (matched by name)."""

import os

import keras

# Layers of the keras.applications models that the DeepLab backbones do not contain.
_UNUSED = {"MobileNetV2": {"Conv_1", "Conv_1_bn"}}


def _application(name):
    return {
        "ResNet50": keras.applications.ResNet50,
        "ResNet101": keras.applications.ResNet101,
        "ResNet152": keras.applications.ResNet152,
        "VGG16": keras.applications.VGG16,
        "MobileNetV2": keras.applications.MobileNetV2,
    }[name]


def _reference_model(app_name, weights, alpha):
    kwargs = {"alpha": alpha} if app_name == "MobileNetV2" else {}
    if weights == "imagenet":
        shape = (224, 224, 3) if app_name == "MobileNetV2" else (None, None, 3)
        # Downloads (and caches in ~/.keras/models) the official notop weights.
        return _application(app_name)(include_top=False, weights="imagenet", input_shape=shape, **kwargs)
    if not os.path.exists(weights):
        raise FileNotFoundError(
            f"Backbone weights file {weights!r} does not exist. Pass backbone_weights='imagenet' "
            "to download the keras.applications weights, None for random init, or the path "
            f"of a keras.applications.{app_name}(include_top=False) weights file."
        )
    errors = []
    for include_top in (False, True):
        shape = (224, 224, 3) if include_top or app_name == "MobileNetV2" else (None, None, 3)
        model = _application(app_name)(include_top=include_top, weights=None, input_shape=shape, **kwargs)
        try:
            model.load_weights(weights)
            return model
        except Exception as e:  # noqa: BLE001 - reported below with both attempts
            errors.append(f"include_top={include_top}: {e}")
    raise ValueError(
        f"Could not load {weights!r} as keras.applications.{app_name} weights (expected the file "
        f"written by keras.applications.{app_name}(include_top=False).save_weights(...), or the "
        "official .h5 download). Shapes or layer names do not match: " + " | ".join(errors)
    )


def load_imagenet_weights(backbone, weights="imagenet"):
    """Copies ``keras.applications`` weights into ``backbone`` layer by layer (by name).

    Args:
        backbone: ResNetBackbone (depth 50/101/152), VGG16Backbone or MobileNetV2Backbone.
        weights: "imagenet" (downloaded by Keras) or the path of a weights file of the
            matching keras.applications model (``.weights.h5`` or the legacy ``.h5``).

    Returns:
        The number of layers whose weights were copied.

    Example:
    >>> backbone = ResNetBackbone(depth=101, output_stride=16)
    >>> load_imagenet_weights(backbone, "imagenet")
    """
    app_name = getattr(backbone, "keras_application", None)
    if app_name is None:
        raise ValueError(
            f"{type(backbone).__name__} with this configuration has no keras.applications "
            "ImageNet weights (only ResNet50/101/152, VGG16 and MobileNetV2 do). Use "
            "backbone_weights=None or a weights file saved from this backbone."
        )
    reference = _reference_model(app_name, weights, getattr(backbone, "alpha", 1.0))
    skip = _UNUSED.get(app_name, set())
    copied = 0
    for ref_layer in reference.layers:
        ref_weights = ref_layer.get_weights()
        if not ref_weights or ref_layer.name in skip:
            continue
        try:
            layer = backbone.get_layer(ref_layer.name)
        except ValueError:
            if ref_layer.name.startswith("predictions") or ref_layer.name.startswith("fc"):
                continue  # classifier head of an include_top file
            raise ValueError(
                f"Layer {ref_layer.name!r} of keras.applications.{app_name} has no counterpart in "
                f"{backbone.name}; is the backbone configured like {app_name}?"
            ) from None
        own = layer.get_weights()
        shapes = [w.shape for w in own], [w.shape for w in ref_weights]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"Weight shapes of layer {ref_layer.name!r} do not match: the backbone expects "
                f"{shapes[0]}, the {app_name} weights have {shapes[1]}."
            )
        layer.set_weights(ref_weights)
        copied += 1
    return copied
