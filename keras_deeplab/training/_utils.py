"""Small shared helpers for keras_deeplab.training (private)."""

from __future__ import annotations

from keras import ops

# Defined in keras_deeplab.utils (shared with inference/ and evaluation/); re-exported here.
from keras_deeplab.utils import main_logits, model_num_classes  # noqa: F401


def squeeze_mask(y_true):
    """Returns integer labels of shape (B, H, W) from a (B, H, W, 1) or (B, H, W) mask."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(y_true, "int32")


def valid_labels(labels, num_classes, ignore_class):
    """Returns (labels with ignored pixels set to 0, float32 validity mask)."""
    valid = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes))
    if ignore_class is not None:
        valid = ops.logical_and(valid, ops.not_equal(labels, ignore_class))
    safe = ops.where(valid, labels, ops.zeros_like(labels))
    return safe, ops.cast(valid, "float32")
