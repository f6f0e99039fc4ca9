"""Callback: stop training on a NaN/Inf loss and say at which step it happened."""

from __future__ import annotations

import math

import keras


class NonFiniteLossError(FloatingPointError):
    """Raised by `StopOnNaN` when the training loss becomes NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN or infinite, naming the step.

    Keras' `TerminateOnNaN` stops silently-ish; this callback records the epoch, the step in
    the epoch and the global step, prints a message with likely causes, and by default raises
    `NonFiniteLossError` so that scripts exit with an error instead of saving a broken model.

    Args:
        raise_error: bool. Raise `NonFiniteLossError` (True) or only stop training (False).
            Defaults to True.
        monitor: str. Log key to check. Defaults to "loss".

    Example:
    ```python
    model.fit(train_ds, epochs=10, callbacks=[kd.callbacks.StopOnNaN()])
    ```
    """

    def __init__(self, raise_error=True, monitor="loss"):
        super().__init__()
        self.raise_error = bool(raise_error)
        self.monitor = monitor
        self.epoch = 0
        self.global_step = 0
        self.failed_at = None  # (epoch, step_in_epoch, global_step) once it happened

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "iterations"):
            self.global_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        else:
            self.global_step += 1
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isfinite(value):
            return
        self.failed_at = (self.epoch, batch, self.global_step)
        message = (
            f"Training loss became {value} at epoch {self.epoch + 1}, step {batch + 1} of the "
            f"epoch (global step {self.global_step}). Likely causes: a learning rate too high, "
            "labels outside [0, num_classes) that are not the ignore label, or float16 overflow "
            "(use mixed_bfloat16 or loss scaling). Training stopped.")
        self.model.stop_training = True
        print(message)
        if self.raise_error:
            raise NonFiniteLossError(message)
