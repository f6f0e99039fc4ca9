"""Batches as the package's datasets yield them: the one place that tells their forms apart.

A batch (one element of a `tf.data.Dataset` or of a plain iterable) comes in these forms:

* ``{"images": x, "segmentation_masks": y}`` (keras_deeplab datasets' ``output="dict"``),
  optionally with ``"augment_params"`` (`keras_deeplab.utils.AUGMENT_PARAMS`);
* ``(x, y)`` (``output="tuple"``, what ``model.fit`` takes), where ``x`` may be
  ``{"images": x, "augment_params": p}`` and ``y`` may be auxiliary-head targets
  ``{"logits": y, "aux_logits": y}`` (`kd.training.with_aux_targets`); a third element (Keras'
  sample weights) is kept apart in ``rest``;
* a bare array: masks for `iterate_masks` / class weights, images for calibration data
  (the caller says which).

``x`` is float (B, H, W, 3) in [0, 255]; ``y`` integer (B, H, W, 1) or (B, H, W) with the
ignore label 255. Everything here works on NumPy arrays, tensors and symbolic Keras tensors
(only the Python structure is inspected).
"""

from __future__ import annotations

import collections

import numpy as np

from keras_deeplab.utils import AUGMENT_PARAMS

#: One unpacked batch. ``kind``: "dict", "tuple" or "array"; ``masks`` as given (an
#: auxiliary-target dict stays a dict); ``params``: augmentation random numbers or None;
#: ``rest``: tuple elements after ``(x, y)`` (sample weights), usually ().
Batch = collections.namedtuple("Batch", ["kind", "images", "masks", "params", "rest"])

_FORMS = ("{'images', 'segmentation_masks'} dicts, (images, masks) tuples or "
          "({'images', 'augment_params'}, masks) tuples")


def unpack_batch(batch, bare="masks"):
    """Unpacks a batch of any form the package accepts (see the module docstring).

    Args:
        batch: a dict, a tuple/list or a bare array / tensor.
        bare: ``"masks"`` or ``"images"``: what a bare array is. Defaults to "masks".

    Returns:
        `Batch` (kind, images, masks, params, rest); images or masks are None where the batch
        carries none.

    Raises:
        ValueError: a dict with neither "images" nor "segmentation_masks", an empty tuple, or
            an unknown ``bare``.
    """
    if bare not in ("masks", "images"):
        raise ValueError(f"unpack_batch(bare=...) must be 'masks' or 'images'; got {bare!r}.")
    if isinstance(batch, dict):
        if "images" not in batch and "segmentation_masks" not in batch:
            raise ValueError(f"Dataset elements must be {_FORMS}; got a dict with keys "
                             f"{sorted(batch)}.")
        return Batch("dict", batch.get("images"), batch.get("segmentation_masks"),
                     batch.get(AUGMENT_PARAMS), ())
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError(f"Dataset elements must be {_FORMS}; got an empty "
                             f"{type(batch).__name__}.")
        x, params = batch[0], None
        if isinstance(x, dict):
            if "images" not in x:
                raise ValueError(f"Dataset elements must be {_FORMS}; got a tuple whose "
                                 f"inputs are a dict with keys {sorted(x)}.")
            x, params = x["images"], x.get(AUGMENT_PARAMS)
        masks = batch[1] if len(batch) > 1 else None
        return Batch("tuple", x, masks, params, tuple(batch[2:]))
    if bare == "images":
        return Batch("array", batch, None, None, ())
    return Batch("array", None, batch, None, ())


def main_masks(masks):
    """The masks of the main output: ``masks["logits"]`` for auxiliary-head targets
    ``{"logits": y, "aux_logits": y}`` (the first value of another dict), else ``masks``."""
    if isinstance(masks, dict):
        return masks["logits"] if "logits" in masks else next(iter(masks.values()))
    return masks


def split_batch(batch, bare="masks"):
    """``(images, masks)`` of a batch of any accepted form (see the module docstring).

    Auxiliary-head targets give the main masks (``"logits"``); augmentation parameters and
    sample weights are dropped.

    Args:
        batch: a dict, a tuple/list or a bare array / tensor.
        bare: ``"masks"`` or ``"images"``: what a bare array is. Defaults to "masks".

    Returns:
        ``(images, masks)``, either None when the batch has none.

    Raises:
        ValueError: see `unpack_batch`.

    Example:
    ```python
    x, y = split_batch({"images": images, "segmentation_masks": masks})
    x, y = split_batch((images, {"logits": masks, "aux_logits": masks}))  # y is masks
    ```
    """
    unpacked = unpack_batch(batch, bare=bare)
    return unpacked.images, main_masks(unpacked.masks)


def to_numpy(x):
    """A tensor / array / nested list as a NumPy array (None stays None)."""
    if x is None:
        return None
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def iterate_batches(dataset, max_batches=None, bare="masks"):
    """Yields ``(images, masks)`` NumPy batches from a dataset or iterable.

    Args:
        dataset: a `tf.data.Dataset` (read with ``as_numpy_iterator``) or any iterable of
            batches (see the module docstring).
        max_batches: int or None. Stop after this many batches. Defaults to None (all).
        bare: what a bare-array element is (see `split_batch`). Defaults to "masks".

    Yields:
        ``(images, masks)`` NumPy arrays (either None when the batches carry none).
    """
    iterator = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            break
        images, masks = split_batch(batch, bare=bare)
        yield to_numpy(images), to_numpy(masks)


def dataset_length(dataset):
    """Number of batches if known cheaply (``len`` or a known ``cardinality()``), else None."""
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
        except Exception:  # noqa: BLE001 - cardinality may be unknown or not an int
            return None
    return None


def iterate_masks(dataset, max_batches=None, progress=True, desc=None):
    """Yields int64 mask batches (B, H, W) from a dataset, with an optional progress bar.

    Args:
        dataset: dataset or iterable of batches; bare arrays are masks.
        max_batches: int or None. Defaults to None (all).
        progress: bool. Show a tqdm progress bar. Defaults to True.
        desc: str or None. Progress bar label.

    Raises:
        ValueError: a batch without masks.
    """
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


def take_images(data, max_images):
    """Collects up to ``max_images`` single images (and masks), e.g. for calibration or parity.

    Args:
        data: None; a NumPy array of images (H, W, 3) or (B, H, W, 3); a list of (H, W, 3)
            arrays (sizes may differ); one in-memory batch (a ``{"images",
            "segmentation_masks"}`` dict or an ``(images (B, H, W, 3), masks)`` tuple); or a
            dataset / iterable of batches in any form of the module docstring (bare arrays
            are images). Images are float in [0, 255]; masks integer (B, H, W) or
            (B, H, W, 1) with the ignore label 255.
        max_images: int. At most this many images are returned.

    Returns:
        ``(images, labels)``: a list of float32 (H, W, 3) arrays ([] for ``data=None``) and a
        list of int32 (H, W) masks, or None when any batch carries no masks.

    Raises:
        ValueError: ``data`` is not None but yields no image (see also `unpack_batch`).
    """
    if data is None:
        return [], None
    if isinstance(data, np.ndarray):
        arr = data if data.ndim == 4 else data[None]
        return [a.astype(np.float32) for a in arr[:max_images]], None
    if isinstance(data, dict) or (
        isinstance(data, tuple) and len(data) == 2 and all(hasattr(d, "shape") for d in data)
        and len(data[0].shape) == 4
    ):
        data = [data]  # one in-memory batch
    images, labels, has_labels = [], [], True
    for batch, masks in iterate_batches(data, bare="images"):
        if batch is None:
            raise ValueError(f"A batch carries no images; batches must be {_FORMS}.")
        if batch.ndim == 3:
            batch = batch[None]
            masks = None if masks is None else masks[None]
        if masks is None:
            has_labels = False
        elif masks.ndim == 4:
            masks = masks[..., 0]
        for i in range(min(batch.shape[0], max_images - len(images))):
            images.append(batch[i].astype(np.float32))
            if masks is not None:
                labels.append(masks[i].astype(np.int32))
        if len(images) >= max_images:
            break
    if not images:
        raise ValueError("The data passed for calibration/parity yielded no images.")
    return images, (labels if has_labels and labels else None)
