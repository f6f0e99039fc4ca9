"""Helpers shared by the SavedModel and TFLite exporters (private)."""

import datetime
import json
import os
import subprocess

import numpy as np

IGNORE_LABEL = 255


def require_tensorflow_backend(what):
    """Raises a clear error when Keras does not run on TensorFlow."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} traces the model with TensorFlow, but Keras runs on the "
            f"'{backend}' backend. Re-run with KERAS_BACKEND=tensorflow (the "
            "weights load on any backend: save the model as .keras, then load "
            "it under TensorFlow and export)."
        )


def model_num_classes(model):
    """Number of output channels of a segmentation model."""
    shape = model.output_shape if hasattr(model, "output_shape") else None
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    num = getattr(model, "num_classes", None)
    if num is None:
        raise ValueError(
            "Cannot tell the number of classes of the model: its output shape "
            f"is {shape!r}. Build the model (call it once) before exporting."
        )
    return int(num)


def _as_numpy(x):
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def take_images(data, max_images, with_labels=True):
    """Collects up to `max_images` single images (and masks) from `data`.

    `data` may be a NumPy array of images (H, W, 3) / (B, H, W, 3), a list
    of such arrays, one in-memory batch (a `{"images", "segmentation_masks"}`
    dict or an `(images, masks)` tuple of arrays), a `tf.data.Dataset` or any
    iterable yielding batches as such dicts or tuples.

    Returns:
        (images, labels): lists of float32 (H, W, 3) arrays and int32 (H, W)
        arrays (labels is None when the data carries none).
    """
    if data is None:
        return [], None
    if isinstance(data, np.ndarray):
        arr = data if data.ndim == 4 else data[None]
        return [a.astype(np.float32) for a in arr[:max_images]], None
    if isinstance(data, dict) or (
        isinstance(data, tuple)
        and len(data) == 2
        and all(hasattr(d, "shape") for d in data)
        and len(data[0].shape) == 4
    ):
        data = [data]  # one in-memory batch: {"images", "segmentation_masks"} or (x, y)
    images, labels = [], []
    has_labels = True
    for element in data:
        if isinstance(element, dict):
            if "images" not in element:
                raise ValueError(
                    "Dataset elements are dicts without an 'images' key "
                    f"(keys: {sorted(element)}); expected "
                    "{'images': ..., 'segmentation_masks': ...}."
                )
            batch = _as_numpy(element["images"])
            masks = element.get("segmentation_masks")
        elif isinstance(element, (tuple, list)):
            batch = _as_numpy(element[0])
            masks = element[1] if len(element) > 1 else None
        else:
            batch = _as_numpy(element)
            masks = None
        if batch.ndim == 3:
            batch = batch[None]
            masks = None if masks is None else _as_numpy(masks)[None]
        if masks is None:
            has_labels = False
        else:
            masks = _as_numpy(masks)
            if masks.ndim == 4:
                masks = masks[..., 0]
        for i in range(batch.shape[0]):
            images.append(batch[i].astype(np.float32))
            if masks is not None:
                labels.append(masks[i].astype(np.int32))
            if len(images) >= max_images:
                break
        if len(images) >= max_images:
            break
    if not images:
        raise ValueError("The dataset passed for calibration/parity yielded no images.")
    return images, (labels if (has_labels and with_labels and labels) else None)


def random_images(num, size, seed=0):
    """Deterministic smooth random test images (uint8 range, float32)."""
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


def resize_image(image, size):
    """Bilinear resize of a float (H, W, 3) image to `size` (h, w)."""
    import tensorflow as tf

    if tuple(image.shape[:2]) == tuple(size):
        return image
    return tf.image.resize(image[None], size, method="bilinear").numpy()[0]


def resize_labels(labels, size):
    """Nearest-neighbour resize of an integer (H, W) mask."""
    import tensorflow as tf

    if tuple(labels.shape[:2]) == tuple(size):
        return labels
    out = tf.image.resize(labels[None, ..., None], size, method="nearest")
    return out.numpy()[0, ..., 0].astype(np.int32)


def git_commit():
    """Commit hash of the working tree the package lives in, if any."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(model, fmt, metadata=None):
    """Common sidecar fields: what produced the file."""
    import keras
    import tensorflow as tf

    import keras_deeplab

    info = {
        "format": fmt,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "keras_deeplab_version": keras_deeplab.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "git_commit": git_commit(),
        "model_class": type(model).__name__,
        "model_name": getattr(model, "name", None),
        "num_classes": model_num_classes(model),
    }
    if metadata:
        info["metadata"] = metadata
    return info


def directory_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def write_sidecar(path, info):
    """Writes `<path>.json` and returns its path."""
    sidecar = str(path).rstrip("/\\") + ".json"
    with open(sidecar, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
    return sidecar


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
