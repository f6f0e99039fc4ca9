"""Model runners behind the prediction engine: Keras, SavedModel and TFLite (private API).

Every runner maps float32 images (B, H, W, 3) in [0, 255] to float32 scores
(B, H, W, C) whose softmax is the class probability (logits, or
log-probabilities for a SavedModel that returns probabilities), and has the attributes
``kind``, ``path`` (None for an in-memory model), ``fixed_input_size`` ((h, w) or None),
``fixed_batch_size`` and ``num_classes`` (None when unknown).
`keras_deeplab.inference.engine.PredictionEngine` runs them.
"""

import os

import numpy as np

from keras_deeplab.utils import main_logits, model_num_classes


class UnknownModelTypeError(ValueError):
    """The model file is not a .keras file, a SavedModel directory or a .tflite file."""


class KerasRunner:
    """Runs a `keras.Model` (logits, or a ``{"logits", ...}`` dict: the main logits are used).

    One call is one ``model.predict_on_batch`` (a compiled predict step); a model whose
    distribution strategy has several replicas goes through ``model.predict`` instead, which
    splits the batch over the replicas (``predict_on_batch`` does not).
    """

    def __init__(self, model, path=None):
        self.model = model
        self.kind = "keras"
        self.path = path
        self.fixed_input_size = None
        self.fixed_batch_size = None
        try:
            self.num_classes = model_num_classes(model)
        except (ValueError, AttributeError):
            self.num_classes = None

    @classmethod
    def from_path(cls, path):
        import keras

        import keras_deeplab.models  # noqa: F401  (registers the custom objects)

        return cls(keras.saving.load_model(path, compile=False), path=path)

    def __call__(self, images):
        import keras

        images = np.asarray(images, np.float32)
        strategy = getattr(self.model, "distribute_strategy", None)
        replicas = getattr(strategy, "num_replicas_in_sync", 1) if strategy is not None else 1
        if replicas > 1:
            # pad to a multiple of the replicas: an empty replica batch breaks oneDNN's Conv2D
            n = len(images)
            padded = np.concatenate([images, np.zeros((-n % replicas,) + images.shape[1:],
                                                      images.dtype)]) if n % replicas else images
            out = self.model.predict(padded, batch_size=len(padded), verbose=0)
            out = {k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n]
        else:
            out = self.model.predict_on_batch(images)
        return np.asarray(keras.ops.convert_to_numpy(main_logits(out)), np.float32)


class SavedModelRunner:
    def __init__(self, path, signature="serving_default"):
        import tensorflow as tf

        self.kind = "saved_model"
        self.path = os.fspath(path)
        self.loaded = tf.saved_model.load(os.fspath(path))
        signatures = dict(self.loaded.signatures)
        if not signatures:
            raise ValueError(f"SavedModel {path} has no signatures to serve.")
        if signature not in signatures:
            signature = sorted(signatures)[0]
        self.fn = signatures[signature]
        inputs = self.fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(
                f"SavedModel {path}: signature {signature!r} takes {len(inputs)} inputs "
                f"({sorted(inputs)}); expected one image input."
            )
        (self.input_name, spec), = inputs.items()
        self.input_dtype = spec.dtype
        outputs = self.fn.structured_outputs
        if "probabilities" in outputs:
            self.output_name, self.output_is_probability = "probabilities", True
        elif "logits" in outputs:
            self.output_name, self.output_is_probability = "logits", False
        elif len(outputs) == 1:
            (self.output_name,) = outputs
            self.output_is_probability = False
        else:
            raise ValueError(
                f"SavedModel {path}: cannot tell which output holds the class scores "
                f"({sorted(outputs)}); expected 'probabilities' or 'logits'."
            )
        out_shape = outputs[self.output_name].shape
        self.num_classes = int(out_shape[-1]) if out_shape[-1] is not None else None
        in_shape = spec.shape
        self.fixed_input_size = (
            (int(in_shape[1]), int(in_shape[2]))
            if in_shape.rank == 4 and in_shape[1] is not None and in_shape[2] is not None
            else None
        )
        self.fixed_batch_size = None

    def __call__(self, images):
        import tensorflow as tf

        images = np.asarray(images, np.float32)
        if self.input_dtype == tf.uint8:
            x = tf.constant(np.clip(np.round(images), 0, 255).astype(np.uint8))
        else:
            x = tf.cast(tf.constant(images), self.input_dtype)
        out = self.fn(**{self.input_name: x})[self.output_name].numpy().astype(np.float32)
        if self.output_is_probability:
            out = np.log(np.clip(out, 1e-12, None))
        return out


class TFLiteModelRunner:
    def __init__(self, path, num_threads=None):
        from keras_deeplab.inference.tflite_runtime import TFLiteRunner

        self.kind = "tflite"
        self.path = os.fspath(path)
        self.runner = TFLiteRunner(path, num_threads=num_threads)
        self.fixed_input_size = self.runner.fixed_input_size
        self.fixed_batch_size = self.runner.fixed_batch_size
        out = self.runner.output_info()["shape"]
        self.num_classes = int(out[-1]) if out[-1] > 0 else None

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        batch = self.fixed_batch_size
        if batch is None or batch == images.shape[0]:
            return self.runner(images)
        outs = []
        for i in range(images.shape[0]):  # fixed batch: run one image at a time
            x = np.repeat(images[i : i + 1], batch, axis=0)
            outs.append(self.runner(x)[:1])
        return np.concatenate(outs, axis=0)


def make_runner(model, num_threads=None):
    """Picks a runner for a keras.Model or a model path."""
    if not isinstance(model, (str, os.PathLike)):
        if hasattr(model, "predict") and callable(model):
            return KerasRunner(model)
        raise TypeError(
            f"Predictor expects a keras.Model or a path to a model, got {type(model).__name__}."
        )
    path = os.fspath(model)
    lower = path.lower().rstrip("/\\")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return SavedModelRunner(path)
        raise UnknownModelTypeError(
            f"{path} is a directory without saved_model.pb, so not a SavedModel. "
            "Pass a .keras file, a SavedModel directory or a .tflite file."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file {path} does not exist.")
    if lower.endswith(".keras"):
        return KerasRunner.from_path(path)
    if lower.endswith(".tflite"):
        return TFLiteModelRunner(path, num_threads=num_threads)
    raise UnknownModelTypeError(
        f"Unknown model file type: {path}. Supported: a .keras file "
        "(model.save('m.keras')), a SavedModel directory (kd.export.saved_model) "
        "or a .tflite file (kd.export.tflite)."
    )
