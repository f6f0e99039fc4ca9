"""What the SavedModel and TFLite exporters share (private): backend check, sample images,
the sidecar record. Images for calibration and parity are collected with
`keras_deeplab.data.batches.take_images`."""

import numpy as np

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
