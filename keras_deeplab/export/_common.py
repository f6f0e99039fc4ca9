"""What the SavedModel and TFLite exporters share (private): backend check, sample images,
the sidecar record."""

import numpy as np

from keras_deeplab.data.batches import split_batch, to_numpy
from keras_deeplab.provenance import provenance, write_json_atomic
from keras_deeplab.utils import model_num_classes


def require_tensorflow_backend(what):
    """Raises RuntimeError naming `what` when Keras does not run on TensorFlow."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} traces the model with TensorFlow, but Keras runs on the "
            f"'{backend}' backend. Re-run with KERAS_BACKEND=tensorflow (the "
            "weights load on any backend: save the model as .keras, then load "
            "it under TensorFlow and export)."
        )


def _is_one_batch(data):
    """An in-memory `{"images", ...}` dict or `(images (B, H, W, 3), masks)` tuple."""
    if isinstance(data, dict):
        return True
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(hasattr(d, "shape") for d in data)
        and len(data[0].shape) == 4
    )


def _split(element):
    """(images, masks or None) NumPy arrays of one batch (a dict, a tuple or bare images)."""
    images, masks = split_batch(element, bare="images")
    if images is None:
        raise ValueError(
            "Dataset elements are dicts without an 'images' key "
            f"(keys: {sorted(element)}); expected "
            "{'images': ..., 'segmentation_masks': ...}."
        )
    return to_numpy(images), to_numpy(masks)


def take_images(data, max_images):
    """Collects up to `max_images` single images (and masks) for calibration or parity.

    Args:
        data: None; a NumPy array of images (H, W, 3) or (B, H, W, 3); a list of (H, W, 3)
            arrays (sizes may differ); one in-memory batch (a `{"images",
            "segmentation_masks"}` dict or an `(images, masks)` tuple of arrays); or a
            `tf.data.Dataset` / iterable yielding such dicts / tuples or image arrays.
            Images are float in [0, 255]; masks integer (B, H, W) or (B, H, W, 1) with
            the ignore label 255.
        max_images: int. At most this many images are returned.

    Returns:
        (images, labels): a list of float32 (H, W, 3) arrays ([] for `data=None`) and a
        list of int32 (H, W) masks, or None when any batch carries no masks.

    Raises:
        ValueError: `data` is not None but yields no image, or a dict batch has no
            "images".
    """
    if data is None:
        return [], None
    if isinstance(data, np.ndarray):
        arr = data if data.ndim == 4 else data[None]
        return [a.astype(np.float32) for a in arr[:max_images]], None
    if _is_one_batch(data):
        data = [data]
    images, labels, has_labels = [], [], True
    for element in data:
        batch, masks = _split(element)
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


def random_images(num, size, seed=0):
    """`num` deterministic smooth random images, float32 (H, W, 3) in [0, 255] (8x8 blocks
    plus Gaussian noise of standard deviation 8), for parity checks without sample data."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(num):
        coarse = rng.uniform(0, 255, size=(max(2, h // 8), max(2, w // 8), 3))
        img = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
        img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="edge")
        img = img + rng.normal(0, 8, size=img.shape)
        out.append(np.clip(img, 0, 255).astype(np.float32))
    return out


def export_record(kind, model, metadata=None, **fields):
    """The sidecar record of an exported file: `keras_deeplab.provenance` schema with
    `kind`, a `model` entry (class, name, num_classes), the exporter's `fields` and the
    user's `metadata` (when given)."""
    model_info = {
        "class": type(model).__name__,
        "name": getattr(model, "name", None),
        "num_classes": model_num_classes(model),
    }
    if metadata:
        fields["metadata"] = metadata
    return provenance(kind, model=model_info, **fields)


def write_sidecar(path, record):
    """Writes `record` to `<path>.json` atomically and returns that path."""
    return write_json_atomic(str(path).rstrip("/\\") + ".json", record)
