"""Small shared helpers: registration, argument checks, the ignore label, NumPy resizing.

This module imports nothing from the rest of the package, so every subpackage may use it.
"""

import keras
import numpy as np

#: Decorator used once on every public class so that ``.keras`` files reload it.
register = keras.saving.register_keras_serializable(package="keras_deeplab")

#: The label of pixels that count for nothing (void, padding, "don't care" borders), as in
#: DeepLab, Cityscapes (trainIds) and PASCAL VOC. The one definition in the package.
IGNORE_LABEL = 255

# The key under which `augment_on="device"` batches carry their augmentation random numbers.
AUGMENT_PARAMS = "augment_params"


def as_pair(value, name):
    """Returns ``value`` as a tuple of two ints (accepts an int or a pair)."""
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
    return value


def check_output_stride(output_stride, allowed=(8, 16, 32)):
    if output_stride not in allowed:
        raise ValueError(
            f"output_stride must be one of {tuple(allowed)}, got {output_stride!r}. "
            "DeepLab uses 16 for training and 8 for the most accurate evaluation."
        )
    return int(output_stride)


def _resize_np(x, size, interpolation):
    x = np.asarray(x)
    size = as_pair(size, "size")
    batched = x.ndim == 4
    if x.ndim not in (3, 4):
        raise ValueError(f"Expected (H, W, C) or (B, H, W, C), got shape {x.shape}.")
    if tuple(x.shape[-3:-1]) == size:
        return x
    out = keras.ops.image.resize(
        x if batched else x[None], size, interpolation=interpolation, antialias=False,
        data_format="channels_last")
    out = np.asarray(keras.ops.convert_to_numpy(out))
    return out if batched else out[0]


def resize_bilinear(x, size):
    """Bilinear resize of NumPy images or score maps (the package's one NumPy resizer).

    Half-pixel centres and no antialiasing, as `keras_deeplab.layers.ResizeLike` and
    ``tf.image.resize(method="bilinear")``, on every Keras backend.

    Args:
        x: float array (H, W, C) or (B, H, W, C).
        size: int or (height, width) in pixels.

    Returns:
        float32 array of the same rank at ``size`` (``x`` itself, as float32, if the size
        already matches).
    """
    return _resize_np(np.asarray(x, np.float32), size, "bilinear").astype(np.float32, copy=False)


def resize_nearest(labels, size):
    """Nearest-neighbour resize of integer label maps (never interpolates a class id).

    Args:
        labels: integer array (H, W) or (B, H, W), values in [0, 255] or any int32.
        size: int or (height, width) in pixels.

    Returns:
        int32 array (…, height, width) with values taken from ``labels``.
    """
    labels = np.asarray(labels)
    out = _resize_np(labels.astype(np.float32)[..., None], size, "nearest")[..., 0]
    return np.rint(out).astype(np.int32)


def main_logits(y_pred):
    """Picks the main logits out of a model output (tensor or ``{"logits", ...}`` dict)."""
    if isinstance(y_pred, dict):
        if "logits" not in y_pred:
            raise ValueError(
                "Model output is a dict without a 'logits' key "
                f"(keys: {sorted(y_pred)}). keras_deeplab models return "
                "{'logits', 'aux_logits'} when built with aux_head=True."
            )
        return y_pred["logits"]
    if isinstance(y_pred, (list, tuple)):
        return y_pred[0]
    return y_pred


def model_num_classes(model) -> int:
    """Number of output channels of a segmentation model's (main) logits."""
    num = getattr(model, "num_classes", None)
    if num is not None:
        return int(num)
    out = None
    for attr in ("output", "outputs"):
        try:
            out = getattr(model, attr)
        except (AttributeError, ValueError):
            continue
        if isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]
        if out is not None:
            break
    if out is not None:
        out = main_logits(out)
        if out.shape[-1] is not None:
            return int(out.shape[-1])
    raise ValueError(
        "Cannot infer the number of classes of the model: it has no static output channels and "
        "no `num_classes` attribute. Pass num_classes explicitly."
    )
