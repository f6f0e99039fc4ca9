"""Writes the golden outputs of every preset (``keras_deeplab.models.PRESETS``) and of the
TensorFlow DeepLab model-zoo architectures (`TF_DEEPLAB_ARCHS`, built by their registered
``build`` with 21 classes) at 64 px.

Each preset is built as listed, given deterministic weights that do not depend on Keras'
initializers (weight ``i`` in ``model.weights`` order drawn from ``default_rng(i)``:
kernels ~ N(0, 1/fan_in), biases and BN shifts ~ N(0, 0.01), BN scales and variances near 1),
and run in inference mode on one fixed 64x64 RGB image. ``<preset>.npz`` stores:

- ``logits_slice``: float32 logits at every 8th pixel, (8, 8, num_classes);
- ``labels``: uint8 argmax at every pixel, (64, 64);
- ``stats``: float64 [mean, std, min, max] of all logits;
- ``trainable_params``, ``num_weights``: int counts.

A changed layer, order of weights, rate, stride or resize shows in these numbers
(tests/test_golden.py compares them). Limit of 64 px: the stride-16 map is 4x4, so an
atrous rate >= 4 there only ever hits its centre tap (and zero padding); changing
ASPP rate 18 to 24 is invisible, changing 6 to 2 is not. Regenerate only for an intended architecture change
and say so in the commit:

    KERAS_BACKEND=tensorflow python tests/golden/make_golden.py [preset or arch ...]
"""

import os
import sys

import numpy as np

SIZE = 64
#: Registered architectures (keras_deeplab.pretrained) with a golden file of their own.
TF_DEEPLAB_ARCHS = ("deeplabv3plus_xception65", "deeplabv3_mobilenetv2", "deeplabv3plus_mobilenetv2")
HERE = os.path.dirname(os.path.abspath(__file__))


def golden_image():
    return np.random.default_rng(1234).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")


def set_deterministic_weights(model):
    for i, w in enumerate(model.weights):
        rng = np.random.default_rng(i)
        shape = tuple(w.shape)
        name = w.path.rsplit("/", 1)[-1]
        if name in ("kernel", "depthwise_kernel"):
            fan_in = int(np.prod(shape[:-1])) if name == "kernel" else int(np.prod(shape[:2]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.8, 1.2, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.01, shape)
        w.assign(value.astype(w.dtype))


def build(name):
    """Preset ``name``, or the registered architecture ``name`` with 21 classes."""
    from keras_deeplab.models.presets import PRESETS, from_preset

    if name in PRESETS:
        return from_preset(name)
    if name in TF_DEEPLAB_ARCHS:
        import keras_deeplab.models  # noqa: F401  (registers the architectures)
        from keras_deeplab.pretrained.registry import get_architecture

        return get_architecture(name).build(21, False)
    raise ValueError(f"{name!r} is neither a preset nor one of {TF_DEEPLAB_ARCHS}.")


def golden_outputs(name):
    """The stored quantities of preset or architecture ``name`` (see the module docstring)."""
    import keras

    model = build(name)
    set_deterministic_weights(model)
    out = model.predict(golden_image(), verbose=0)
    logits = np.asarray(out["logits"] if isinstance(out, dict) else out, np.float32)[0]
    return {
        "logits_slice": logits[::8, ::8].astype(np.float32),
        "labels": logits.argmax(-1).astype(np.uint8),
        "stats": np.array([logits.mean(), logits.std(), logits.min(), logits.max()], np.float64),
        "trainable_params": np.int64(sum(int(np.prod(v.shape)) for v in model.trainable_weights)),
        "num_weights": np.int64(len(model.weights)),
        "keras_version": np.array(keras.__version__),
    }


def main(names):
    from keras_deeplab.models.presets import PRESETS

    for name in names or [*sorted(PRESETS), *TF_DEEPLAB_ARCHS]:
        path = os.path.join(HERE, f"{name}.npz")
        np.savez_compressed(path, **golden_outputs(name))
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
