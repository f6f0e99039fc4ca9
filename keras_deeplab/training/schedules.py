"""Learning-rate schedules: DeepLab's polynomial decay with a linear warm-up."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Polynomial ("poly") learning-rate decay with an optional linear warm-up.

    With ``s`` the optimizer step (0-based), ``W = warmup_steps`` and ``T = total_steps``::

        s <  W:  lr = base_lr * (warmup_factor + (1 - warmup_factor) * s / W)
        s >= W:  lr = end_lr + (base_lr - end_lr) * (1 - min(s - W, T - W) / (T - W)) ** power

    so the rate rises linearly to ``base_lr`` during warm-up, then decays over the remaining
    ``T - W`` steps to ``end_lr``, where it stays. With ``W = 0`` this is DeepLab's
    ``tf.train.polynomial_decay(base_lr, step, T, end_lr, power)``.

    Args:
        base_lr: float. Peak learning rate. DeepLab uses 0.01 (Cityscapes) / 0.007 (VOC).
        total_steps: int. Total number of training steps (optimizer updates).
        warmup_steps: int. Length of the linear warm-up. Defaults to 0.
        power: float. Exponent of the decay. Defaults to 0.9.
        end_lr: float. Final learning rate. Defaults to 0.
        warmup_factor: float. Fraction of `base_lr` at step 0 of the warm-up. Defaults to 0.

    Example:
    ```python
    lr = kd.training.PolyDecay(0.01, total_steps=90_000, warmup_steps=1000)
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    ```

    Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
    Atrous Convolution, and Fully Connected CRFs", TPAMI 2017 (the "poly" policy).
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, power=0.9, end_lr=0.0,
                 warmup_factor=0.0):
        if int(total_steps) <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0 <= int(warmup_steps) < int(total_steps):
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")
        if float(base_lr) <= 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr}")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.power = float(power)
        self.end_lr = float(end_lr)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        poly = self.end_lr + (self.base_lr - self.end_lr) * ops.power(1.0 - progress, self.power)
        if self.warmup_steps == 0:
            return poly
        ramp = self.base_lr * (self.warmup_factor
                               + (1.0 - self.warmup_factor) * step / warmup)
        return ops.where(step < warmup, ramp, poly)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "power": self.power,
            "end_lr": self.end_lr,
            "warmup_factor": self.warmup_factor,
        }
