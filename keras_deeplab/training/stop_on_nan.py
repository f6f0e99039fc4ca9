"""Callback: stop training on a NaN/Inf loss (or batch-norm statistics) and say at which step."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_deeplab.backbones.base import batch_norm_layers


class NonFiniteLossError(FloatingPointError):
    """Raised by `StopOnNaN` when the training loss, or a batch-norm moving statistic,
    becomes NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN or infinite, naming the step.

    Keras' `TerminateOnNaN` stops silently-ish; this callback records the epoch, the step in
    the epoch and the global step, prints a message with likely causes, and by default raises
    `NonFiniteLossError` so that scripts exit with an error instead of saving a broken model.

    The loss alone can miss a broken run: oneDNN's max pooling and its fused batch norm +
    ReLU and Conv2D + ReLU kernels turn NaN activations into 0, so NaN weights (or NaN
    input images) can leave the loss finite while the weights stay NaN. The batch statistics
    of a batch norm in training are NaN whenever its input holds a NaN, and they go into the
    layer's moving statistics; so with ``check_batch_norm`` (the default) the moving mean and
    variance of every `keras.layers.BatchNormalization` of the model are checked too, at the
    same steps as the loss (118 small vectors for a ResNet-50 DeepLabV3: ~8-9 ms per check
    on a 2-core CPU; with ``steps_per_execution=k`` the check runs once per k steps).

    Args:
        raise_error: bool. Raise `NonFiniteLossError` (True) or only stop training (False).
            Defaults to True.
        monitor: str. Log key to check. Defaults to "loss".
        check_batch_norm: bool. Also check the batch-norm moving statistics. Defaults to
            True.

    Example:
    ```python
    model.fit(train_ds, epochs=10, callbacks=[kd.callbacks.StopOnNaN()])
    ```
    """

    def __init__(self, raise_error=True, monitor="loss", check_batch_norm=True):
        super().__init__()
        self.raise_error = bool(raise_error)
        self.monitor = monitor
        self.check_batch_norm = bool(check_batch_norm)
        self._statistics = None  # [(layer name, variable)] of the model being trained
        self.epoch = 0
        self.global_step = 0
        self.failed_at = None  # (epoch, step_in_epoch, global_step) once it happened

    def on_train_begin(self, logs=None):
        self._statistics = None  # found at the first check (the callback may be reused)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "iterations"):
            self.global_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        else:
            self.global_step += 1
        value = (logs or {}).get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            self._fail(batch, f"Training loss became {float(value)}")
            return
        broken = self._non_finite_statistic()
        if broken is not None:
            self._fail(batch, f"The batch-norm moving statistics of layer {broken!r} became "
                              "non-finite (NaN activations reached it; the loss can stay finite "
                              "when pooling or fused kernels turn NaN into 0)",
                       extra="non-finite input images, ")

    def _non_finite_statistic(self):
        """Name of the first batch-norm layer whose moving statistics are not finite."""
        if not self.check_batch_norm:
            return None
        if self._statistics is None:
            self._statistics = [(layer.name, v) for layer in batch_norm_layers(self.model)
                                for v in (layer.moving_mean, layer.moving_variance)]
        for name, variable in self._statistics:
            if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
                return name
        return None

    def _fail(self, batch, what, extra=""):
        self.failed_at = (self.epoch, batch, self.global_step)
        # With steps_per_execution=k the callbacks run after every k steps, so the step is
        # one of the last k.
        k = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        where = (f"step {batch + 1} of the epoch (global step {self.global_step})" if k == 1 else
                 f"one of steps {max(1, batch + 2 - k)}-{batch + 1} of the epoch (global steps "
                 f"{max(1, self.global_step - k + 1)}-{self.global_step}; steps_per_execution={k})")
        message = (
            f"{what} at epoch {self.epoch + 1}, {where}. Likely causes: {extra}a learning rate too "
            "high, labels outside [0, num_classes) that are not the ignore label, or float16 "
            "overflow (use mixed_bfloat16 or loss scaling). Training stopped.")
        self.model.stop_training = True
        print(message)
        if self.raise_error:
            raise NonFiniteLossError(message)
