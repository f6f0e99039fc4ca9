"""Mixed-precision policy flag."""

from __future__ import annotations

import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(precision="float32"):
    """Sets Keras' global dtype policy; returns the previous policy name.

    - ``"mixed_bfloat16"``: bfloat16 compute, float32 variables; no loss scaling needed.
      For TPUs and CPUs with AMX or AVX512_BF16 (``/proc/cpuinfo`` flags ``amx_bf16`` /
      ``avx512_bf16``): on a 2-core Zen 4 with AVX512_BF16 a DeepLabV3-ResNet50 ran
      inference ~1.6x and training ~1.4x faster than in float32 (issue 16's measurements;
      `benchmarks/RESULTS.md` has the current ones). Without them TensorFlow has no fast
      bfloat16 convolutions: on a Zen 3 (AVX2 only) a bf16 training step was 6x *slower*.
      Not the default: accuracy parity with float32 has not been measured yet. Training
      with ``jit_compile=True`` under this policy fails in XLA on TF 2.21 ("Seen floating
      point types of different precisions" in the gradient of the ASPP dropout); train
      bf16 without XLA.
    - ``"mixed_float16"``: float16 compute for GPUs with tensor cores; `model.compile` wraps
      the optimizer in `keras.optimizers.LossScaleOptimizer` automatically.
    - ``"float32"``: full precision.

    keras_deeplab models end with a float32 logits layer and the losses compute in float32,
    so logits, loss and metrics stay float32 under every policy. Set the policy *before*
    building the model.

    Args:
        precision: str. One of "float32", "mixed_float16", "mixed_bfloat16".

    Example:
    ```python
    kd.training.set_precision("mixed_bfloat16")
    model = kd.models.DeepLabV3Plus(num_classes=19)
    ```
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {PRECISIONS}.")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(precision)
    return previous
