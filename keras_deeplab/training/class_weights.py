"""Class weights computed from the label statistics of a training set."""

from __future__ import annotations

import warnings

import numpy as np

from keras_deeplab.data.batches import iterate_masks
from keras_deeplab.utils import IGNORE_LABEL

METHODS = ("median_frequency", "inverse_frequency", "enet")


def count_pixels(dataset, num_classes, ignore_class=IGNORE_LABEL, max_batches=None, progress=True):
    """Counts labelled pixels per class over a dataset.

    Args:
        dataset: a `tf.data.Dataset` or any iterable yielding `{"images",
            "segmentation_masks"}` dicts, `(images, masks)` tuples or bare mask arrays.
        num_classes: int. Number of classes.
        ignore_class: int or None. Label not counted. Defaults to 255.
        max_batches: int or None. Stop after this many batches. Defaults to None (all).
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        `(pixel_counts, image_pixels)`: int64 arrays of shape (num_classes,). `pixel_counts[c]`
        is the number of pixels of class c; `image_pixels[c]` the number of labelled pixels in
        the images where class c appears (the denominator of median-frequency balancing).

    Raises:
        ValueError: if a mask holds a value that is neither a class id nor `ignore_class`,
            or the dataset is empty.
    """
    counts = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    seen = 0
    for masks in iterate_masks(dataset, max_batches=max_batches, progress=progress,
                               desc="Counting class pixels"):
        masks = masks.reshape(masks.shape[0], -1)
        for mask in masks:
            if ignore_class is not None:
                mask = mask[mask != ignore_class]
            bad = (mask < 0) | (mask >= num_classes)
            if bad.any():
                raise ValueError(
                    f"Mask value {int(mask[bad][0])} is neither a class id in [0, {num_classes}) "
                    f"nor the ignore label {ignore_class}. Check num_classes or the label mapping."
                )
            per_image = np.bincount(mask, minlength=num_classes).astype(np.int64)
            counts += per_image
            image_pixels[per_image > 0] += mask.size
            seen += 1
    if seen == 0:
        raise ValueError("compute_class_weights: the dataset yielded no masks.")
    return counts, image_pixels


def compute_class_weights(dataset, num_classes, method="median_frequency",
                          ignore_class=IGNORE_LABEL, max_batches=None, progress=True):
    """Per-class loss weights from the label statistics of a dataset.

    Methods:
      * ``"median_frequency"`` (Eigen & Fergus, ICCV 2015): ``freq_c = pixels_c /
        pixels of the images containing c``, ``w_c = median(freq) / freq_c``.
      * ``"inverse_frequency"``: ``w_c = p_total / (num_present * pixels_c)`` (mean 1 over the
        present classes).
      * ``"enet"`` (Paszke et al., 2016): ``w_c = 1 / ln(1.02 + pixels_c / p_total)``.

    Classes that never occur get weight 0 (a warning names them): they cannot contribute to a
    loss anyway, and a huge weight would be meaningless.

    Args:
        dataset: dataset or iterable of masks; see `count_pixels`.
        num_classes: int. Number of classes.
        method: str. One of "median_frequency", "inverse_frequency", "enet".
            Defaults to "median_frequency".
        ignore_class: int or None. Label not counted. Defaults to 255.
        max_batches: int or None. Use only this many batches. Defaults to None.
        progress: bool. Show a progress bar. Defaults to True.

    Returns:
        float32 NumPy array of shape (num_classes,), ready for
        `kd.losses.CrossEntropy(class_weights=...)`.

    Example:
    ```python
    weights = kd.losses.compute_class_weights(train_ds, num_classes=19)
    loss = kd.losses.CrossEntropy(class_weights=weights)
    ```
    """
    if method not in METHODS:
        raise ValueError(f"Unknown class-weight method {method!r}; expected one of {METHODS}.")
    counts, image_pixels = count_pixels(dataset, num_classes, ignore_class, max_batches, progress)
    return class_weights_from_counts(counts, image_pixels, method)


def class_weights_from_counts(counts, image_pixels=None, method="median_frequency"):
    """Class weights from pixel counts (see `compute_class_weights`)."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if not present.any():
        raise ValueError("No labelled pixels: cannot compute class weights.")
    if (~present).any():
        warnings.warn(
            f"Classes {np.flatnonzero(~present).tolist()} never occur in the dataset; "
            "their class weight is set to 0.", stacklevel=2)
    if method == "median_frequency":
        if image_pixels is None:
            raise ValueError("median_frequency needs image_pixels (see count_pixels).")
        freq = counts[present] / np.asarray(image_pixels, np.float64)[present]
        weights[present] = np.median(freq) / freq
    elif method == "inverse_frequency":
        weights[present] = counts.sum() / (present.sum() * counts[present])
    elif method == "enet":
        weights[present] = 1.0 / np.log(1.02 + counts[present] / counts.sum())
    else:
        raise ValueError(f"Unknown class-weight method {method!r}; expected one of {METHODS}.")
    return weights.astype(np.float32)
