"""Private helpers to read batches from tf.data datasets or plain iterables."""

from __future__ import annotations

import numpy as np


def split_batch(batch):
    """Returns (images, masks) from a dict, a tuple/list or a bare array batch.

    Dicts use the keras_deeplab keys ``"images"`` and ``"segmentation_masks"``; masks may be
    None when the batch carries only images.
    """
    if isinstance(batch, dict):
        if "segmentation_masks" not in batch and "images" not in batch:
            raise ValueError(
                "Dataset elements must be {'images', 'segmentation_masks'} dicts or "
                f"(images, masks) tuples; got a dict with keys {sorted(batch)}.")
        return batch.get("images"), batch.get("segmentation_masks")
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            return batch[0], None
        masks = batch[1]
        if isinstance(masks, dict):  # aux-head targets {"logits": m, "aux_logits": m}
            masks = masks.get("logits", next(iter(masks.values())))
        return batch[0], masks
    return None, batch


def to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def iterate_batches(dataset, max_batches=None):
    """Yields (images, masks) NumPy batches from a dataset or iterable."""
    iterator = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            break
        images, masks = split_batch(batch)
        yield to_numpy(images), to_numpy(masks)


def dataset_length(dataset):
    """Number of batches if known cheaply, else None."""
    try:
        n = len(dataset)
        return int(n) if n >= 0 else None
    except TypeError:
        pass
    card = getattr(dataset, "cardinality", None)
    if card is not None:
        try:
            n = int(card())
            return n if n >= 0 else None
        except Exception:  # noqa: BLE001 - cardinality may be unknown
            return None
    return None


def iterate_masks(dataset, max_batches=None, progress=True, desc=None):
    """Yields int64 mask batches (B, H, W) from a dataset, with an optional progress bar."""
    from tqdm.auto import tqdm

    total = dataset_length(dataset)
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    for _, masks in tqdm(iterate_batches(dataset, max_batches), total=total, desc=desc,
                         disable=not progress, leave=False):
        if masks is None:
            raise ValueError("The dataset yields no segmentation masks.")
        masks = np.asarray(masks).astype(np.int64)
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.ndim == 2:
            masks = masks[None]
        yield masks
