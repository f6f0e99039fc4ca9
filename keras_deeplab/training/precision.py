"""Mixed-precision policy flag."""

from __future__ import annotations

import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(precision="float32"):
    """Sets Keras' global dtype policy; returns the previous policy name.

    - ``"mixed_bfloat16"``: bfloat16 compute, float32 variables. For TPUs and CPUs with
      AMX/AVX512-BF16; no loss scaling needed.
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
