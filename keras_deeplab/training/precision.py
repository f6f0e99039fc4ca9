"""Mixed-precision policy flag, with "auto": bf16 where the CPU computes it natively."""

from __future__ import annotations

import functools
import sys

import keras

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic (AVX512_BF16: Cooper Lake,
# Zen 4 and later; AMX: Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _read_cpuinfo():
    """The text of ``/proc/cpuinfo``, or "" where there is none (non-Linux) or it can't be
    read."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.lru_cache(maxsize=None)
def cpu_supports_bf16():
    """Whether this CPU has native bfloat16 arithmetic.

    Reads the ``flags`` lines of ``/proc/cpuinfo`` once per process (cached) and looks for
    ``avx512_bf16`` or ``amx_bf16`` (`BF16_CPU_FLAGS`).

    Returns:
        bool. False on non-Linux systems and wherever ``/proc/cpuinfo`` can't be read.
    """
    flags = set()
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def _has_accelerator():
    """Whether the Keras backend computes on a GPU/TPU (not only the CPU)."""
    backend = keras.config.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_logical_devices("GPU")
                        or tf.config.list_logical_devices("TPU"))
        if backend == "jax":
            import jax

            return jax.default_backend() != "cpu"
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # a backend that can't list its devices: treat it as CPU-only
        return False
    return False


def resolve_precision(precision="auto"):
    """The dtype policy name `set_precision` sets for ``precision``.

    ``"auto"`` resolves to ``"mixed_bfloat16"`` when the backend computes on the CPU only
    and the CPU has native bf16 (`cpu_supports_bf16`), else to ``"float32"``: with a GPU or
    TPU present "auto" stays float32 (ask for "mixed_float16" / "mixed_bfloat16" explicitly
    there). Every other name is returned unchanged.

    Args:
        precision: str. One of `PRECISIONS`. Defaults to "auto".

    Returns:
        str. "float32", "mixed_float16" or "mixed_bfloat16".

    Raises:
        ValueError: for a name not in `PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {PRECISIONS}.")
    if precision != "auto":
        return precision
    if cpu_supports_bf16() and not _has_accelerator():
        return "mixed_bfloat16"
    return "float32"


def set_precision(precision="float32"):
    """Sets Keras' global dtype policy; returns the previous policy name.

    The default of `OptimConfig.precision` (``keras-deeplab train --precision``) and of the
    demo is "float32"; "auto" is opt-in (see below).

    - ``"auto"``: `resolve_precision` picks ``"mixed_bfloat16"`` on a CPU-only backend whose
      CPU has AVX512_BF16 or AMX (``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``),
      else ``"float32"`` (also whenever a GPU/TPU is visible: ask for a mixed policy
      explicitly there). Opt-in, not the default: on the demo (two seeds, CPU with
      AVX512_BF16) bf16's DeepLabv3+ test mIoU was 1.55 points below and 2.18 points above
      float32's, with every demo target met; float32's own seed-to-seed spread was 1.5
      points, so parity within 0.5 points is neither shown nor ruled out
      (`benchmarks/RESULTS.md`, "bf16 accuracy parity").
    - ``"mixed_bfloat16"``: bfloat16 compute, float32 variables; no loss scaling needed.
      For TPUs and CPUs with AMX or AVX512_BF16: on an idle 2-core CPU with AVX512_BF16 a
      DeepLabV3-ResNet50 ran inference and training ~1.8x faster than in float32
      (`benchmarks/RESULTS.md`, quiet-machine section; with the fused batch norm).
      Without those instructions TensorFlow has no fast bfloat16 convolutions: on a CPU
      with AVX2 only a bf16 training step was 6x *slower*, which is why "auto" checks the
      CPU. Training with ``jit_compile=True`` under this policy fails in XLA on TF 2.21
      (mixed precisions in a gradient, e.g. of the ASPP dropout or a ReLU); train bf16
      without XLA (XLA was also slower than the default on CPU in float32).
      `kd.export.tflite` converts such a model's float32 copy (TFLite has no bf16 kernels).
    - ``"mixed_float16"``: float16 compute for GPUs with tensor cores; `model.compile` wraps
      the optimizer in `keras.optimizers.LossScaleOptimizer` automatically.
    - ``"float32"``: full precision.

    keras_deeplab models end with a float32 logits layer and the losses compute in float32,
    so logits, loss and metrics stay float32 under every policy. Set the policy *before*
    building the model; ``keras.config.dtype_policy().name`` tells which one "auto" chose.

    Args:
        precision: str. One of `PRECISIONS`: "auto", "float32", "mixed_float16",
            "mixed_bfloat16". Defaults to "float32" (this function changes global state
            only as asked).

    Returns:
        str. The previous policy name.

    Raises:
        ValueError: for a name not in `PRECISIONS`.

    Example:
    ```python
    kd.training.set_precision("auto")   # mixed_bfloat16 on AVX512_BF16/AMX CPUs, else float32
    model = kd.models.DeepLabV3Plus(num_classes=19)
    ```
    """
    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    return previous
