"""Small shared helpers for keras_deeplab.training (private)."""

from __future__ import annotations

import keras
from keras import ops


def squeeze_mask(y_true):
    """Returns integer labels of shape (B, H, W) from a (B, H, W, 1) or (B, H, W) mask."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(y_true, "int32")


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


def valid_labels(labels, num_classes, ignore_class):
    """Returns (labels with ignored pixels set to 0, float32 validity mask)."""
    valid = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes))
    if ignore_class is not None:
        valid = ops.logical_and(valid, ops.not_equal(labels, ignore_class))
    safe = ops.where(valid, labels, ops.zeros_like(labels))
    return safe, ops.cast(valid, "float32")


def model_num_classes(model: keras.Model) -> int:
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
