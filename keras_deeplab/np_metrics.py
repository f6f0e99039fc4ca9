"""NumPy segmentation maths shared by evaluation, export parity, CRF search and the demo."""

import numpy as np

from keras_deeplab.utils import IGNORE_LABEL


def softmax(logits, axis=-1):
    """Numerically stable softmax; float32 out (computed in float64)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def confusion_matrix(labels, predictions, num_classes, ignore_class=IGNORE_LABEL, strict=True):
    """int64 confusion matrix (rows: truth, columns: prediction) over non-ignored pixels.

    Args:
        labels, predictions: integer arrays of the same size.
        num_classes: int.
        ignore_class: int or None. Label excluded from the count. Defaults to 255.
        strict: bool. Raise on a label that is neither a class id nor ``ignore_class``
            (a dataset/model mismatch); when False such pixels are skipped.

    Example:
    >>> cm = confusion_matrix(masks, np.argmax(logits, -1), num_classes=19)
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions differ in size: {labels.shape} vs {predictions.shape}"
        )
    valid = labels != ignore_class if ignore_class is not None else np.ones_like(labels, bool)
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        if strict:
            raise ValueError(
                f"Mask value {int(labels[bad][0])} is neither a class id in [0, {num_classes}) "
                f"nor the ignore label {ignore_class}: the dataset and the model disagree on the "
                "number of classes (or the labels need mapping, e.g. Cityscapes labelIds -> "
                "trainIds)."
            )
        valid &= ~bad
    return np.bincount(
        num_classes * labels[valid] + predictions[valid], minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)


def iou_from_confusion(cm):
    """Per-class IoU from a confusion matrix (rows truth); NaN where TP + FP + FN == 0."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def mean_iou(cm):
    """Mean IoU over the classes present in ground truth or prediction (NaN if none)."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
