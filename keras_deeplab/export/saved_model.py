"""SavedModel export: a uint8 serving signature (labels + probabilities) and a parity sidecar."""

import os

import numpy as np

from keras_deeplab.data.batches import take_images
from keras_deeplab.export import _common
from keras_deeplab.export.parity import parity_report
from keras_deeplab.np_metrics import softmax
from keras_deeplab.utils import main_logits, model_num_classes

SIGNATURE_KEY = "serving_default"


def saved_model(
    model,
    path,
    sample_data=None,
    num_parity_images=4,
    label_dtype="int32",
    metadata=None,
    verbose=True,
):
    """Exports a segmentation model as a TensorFlow SavedModel with a uint8 signature.

    The `serving_default` signature takes `images`, a uint8 tensor of shape
    (B, H, W, 3) with any B, H and W (RGB, 0-255), casts it to float32 in
    [0, 255] (the model normalises internally) and returns, at the input
    resolution:

    - `labels`: (B, H, W) argmax labels (int32, or uint8 with
      `label_dtype="uint8"`);
    - `probabilities`: (B, H, W, num_classes) float32 softmax of the logits.

    Models with an auxiliary head export their main logits only. After writing,
    the SavedModel is reloaded from disk and compared with the Keras model on
    sample images; the sidecar `<path>.json` (the `keras_deeplab.provenance`
    schema, kind "saved_model") records the signature, the size on disk, the
    model and that parity (`max_abs_diff_probabilities`, `argmax_agreement`,
    and with masks `miou_keras` / `miou_exported` / `miou_delta`; see
    `kd.export.parity_report`).

    Args:
        model: keras.Model. Segmentation model mapping float32 (B, H, W, 3)
            images in [0, 255] to logits (B, H, W, C) (or a `{"logits", ...}`
            dict). TensorFlow backend only.
        path: str or os.PathLike. Output directory (created or overwritten).
        sample_data: images (and masks) for the parity check: an array
            (B, H, W, 3) or (H, W, 3) in [0, 255], a list of (H, W, 3) arrays,
            one `(images, masks)` / `{"images", "segmentation_masks"}` batch,
            or a dataset yielding such batches (masks give the mIoU delta).
            Defaults to None: synthetic images, two of 67x91 and the rest 64x64.
        num_parity_images: int. Images used for the parity check. Defaults to 4.
        label_dtype: str. `"int32"` or `"uint8"` for the labels output.
            Defaults to `"int32"`.
        metadata: dict or None. Stored under "metadata" in the sidecar (recipe,
            metrics...). Defaults to None.
        verbose: bool. Print a one-line summary. Defaults to True.

    Returns:
        dict: the sidecar record (also written to `<path>.json`).

    Raises:
        RuntimeError: Keras does not run on the TensorFlow backend, or the reloaded
            SavedModel's labels disagree with its own probabilities (a broken signature).
        ValueError: `label_dtype` is not "int32"/"uint8", uint8 labels cannot hold
            the classes, the model's number of classes is unknown, or
            `sample_data` yields no images.

    Example:

    ```python
    kd.export.saved_model(model, "saved_models/cs_dlv3p")
    served = tf.saved_model.load("saved_models/cs_dlv3p")
    out = served.signatures["serving_default"](images=tf.zeros((1, 300, 400, 3), tf.uint8))
    out["labels"].shape  # (1, 300, 400)
    ```
    """
    _common.require_tensorflow_backend("kd.export.saved_model")
    import keras
    import tensorflow as tf

    if label_dtype not in ("int32", "uint8"):
        raise ValueError(f"label_dtype must be 'int32' or 'uint8', got {label_dtype!r}.")
    num_classes = model_num_classes(model)
    if label_dtype == "uint8" and num_classes > 256:
        raise ValueError(
            f"label_dtype='uint8' cannot hold {num_classes} classes; use 'int32'."
        )
    out_label_dtype = tf.int32 if label_dtype == "int32" else tf.uint8
    path = os.fspath(path)

    def serve(images):
        x = tf.cast(images, tf.float32)
        logits = tf.cast(main_logits(model(x, training=False)), tf.float32)
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "labels": tf.cast(labels, out_label_dtype),
            "probabilities": tf.nn.softmax(logits, axis=-1),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.write_out(path, verbose=False)

    # Parity: reload from disk and compare with the in-memory Keras model.
    images, labels = take_images(sample_data, num_parity_images)
    source = "sample_data"
    if not images:
        images = _common.random_images(2, (67, 91), seed=0) + _common.random_images(
            max(0, num_parity_images - 2), (64, 64), seed=1
        )
        source = "synthetic"
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE_KEY]
    ref_logits, cand_logits = [], []
    for image in images:
        pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)[None]
        ref = keras.ops.convert_to_numpy(
            main_logits(model(pixels.astype(np.float32), training=False))
        )
        out = signature(images=tf.constant(pixels))
        probs = out["probabilities"].numpy()[0]
        # Compare probabilities as "logits": log-probabilities differ from the
        # logits by a per-pixel constant, so compare softmax outputs directly.
        ref_logits.append(np.log(np.clip(softmax(ref[0]), 1e-30, None)))
        cand_logits.append(np.log(np.clip(probs, 1e-30, None)))
        if not np.array_equal(out["labels"].numpy()[0].astype(np.int64), probs.argmax(-1)):
            raise RuntimeError(
                f"The SavedModel written to {path} returns labels that disagree with its own "
                "probabilities: its serving signature is broken. Please report this."
            )
    parity = parity_report(ref_logits, cand_logits, labels)
    # Log-probabilities of near-zero classes are noisy; keep the meaningful fields.
    parity.pop("max_abs_diff_logits")
    parity.pop("max_abs_logit_keras")
    parity["images_source"] = source
    parity["image_sizes"] = [list(im.shape[:2]) for im in images]

    info = _common.export_record(
        "saved_model",
        model,
        metadata,
        path=path,
        size_bytes=_directory_size(path),
        signature={
            "name": SIGNATURE_KEY,
            "inputs": {"images": {"dtype": "uint8", "shape": [None, None, None, 3]}},
            "outputs": {
                "labels": {"dtype": label_dtype, "shape": [None, None, None]},
                "probabilities": {"dtype": "float32", "shape": [None, None, None, num_classes]},
            },
            "preprocessing": "cast uint8 -> float32 in [0, 255]; the model normalises",
        },
        parity=parity,
    )
    sidecar = _common.write_sidecar(path, info)
    if verbose:
        print(
            f"SavedModel written to {path} ({info['size_bytes'] / 1e6:.1f} MB); "
            f"parity: max |dprob| = {parity['max_abs_diff_probabilities']:.2e}, "
            f"argmax agreement = {parity['argmax_agreement']:.4f}; sidecar {sidecar}"
        )
    return info


def _directory_size(path):
    """Total size in bytes of the files under `path`."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(path)
        for name in files
    )
