"""DeepLab's optimizer: SGD + momentum, poly learning rate, weight decay on kernels only."""

from __future__ import annotations

import keras

from keras_deeplab.training.schedules import PolyDecay

# Variables whose name does not contain "kernel" (biases, BN gamma/beta, ...) get no decay.
NO_DECAY_PATTERN = r"^(?!.*kernel)"


@keras.saving.register_keras_serializable(package="keras_deeplab")
class KernelDecaySGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose decoupled weight decay applies to kernels only.

    Keras' SGD applies ``weight_decay`` to every trainable variable; DeepLab regularises only
    convolution/dense kernels (not biases, not batch-norm ``gamma``/``beta``). This subclass
    excludes every variable whose name does not match ``decay_pattern`` and, unlike a plain
    ``exclude_from_weight_decay(...)`` call, keeps that rule in its config so it survives
    ``model.save`` / ``keras.models.load_model``.

    The decay is decoupled: each step does ``w -= lr * weight_decay * w`` before the momentum
    update. For SGD this equals an L2 penalty ``weight_decay / 2 * ||w||^2`` on the loss
    (what DeepLab's ``slim.l2_regularizer`` adds) except that the decay term does not go
    through the momentum buffer; it needs no access to the model and is identical on every
    backend.

    Args:
        learning_rate: float or schedule. Defaults to 0.01.
        momentum: float. Defaults to 0.9.
        weight_decay: float or None. Decoupled decay coefficient. Defaults to 4e-5.
        nesterov: bool. Defaults to False.
        decay_pattern: str. Regular expression; variables whose name matches it are decayed.
            Defaults to "kernel" (matches `kernel`, `depthwise_kernel`, `pointwise_kernel`).
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    Example:
    ```python
    opt = kd.training.KernelDecaySGD(kd.training.PolyDecay(0.01, 90_000), weight_decay=4e-5)
    ```
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=4e-5, nesterov=False,
                 decay_pattern="kernel", name="kernel_decay_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, name=name, **kwargs)
        self.decay_pattern = decay_pattern
        self.exclude_from_weight_decay(var_names=[rf"^(?!.*{decay_pattern})"])

    def get_config(self):
        config = super().get_config()
        config["decay_pattern"] = self.decay_pattern
        return config


def poly_sgd(base_lr, total_steps, warmup_steps=0, momentum=0.9, power=0.9, weight_decay=4e-5,
             end_lr=0.0, nesterov=False, **kwargs):
    """DeepLab's training optimizer: SGD with momentum and poly learning-rate decay.

    Returns a `KernelDecaySGD` whose learning rate is a `PolyDecay` schedule; weight decay
    applies to kernels only (decoupled, see `KernelDecaySGD` for the exact rule).

    Args:
        base_lr: float. Peak learning rate (0.01 for DeepLab on Cityscapes, 0.007 on VOC).
        total_steps: int. Number of optimizer steps of the whole run.
        warmup_steps: int. Linear warm-up steps. Defaults to 0.
        momentum: float. Defaults to 0.9.
        power: float. Poly exponent. Defaults to 0.9.
        weight_decay: float. Kernel weight decay. Defaults to 4e-5.
        end_lr: float. Final learning rate. Defaults to 0.
        nesterov: bool. Defaults to False.
        **kwargs: passed to the optimizer (e.g. `global_clipnorm`).

    Example:
    ```python
    model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=90_000, warmup_steps=1000),
                  loss=kd.losses.CrossEntropy())
    ```
    """
    schedule = PolyDecay(base_lr, total_steps, warmup_steps=warmup_steps, power=power,
                         end_lr=end_lr)
    return KernelDecaySGD(learning_rate=schedule, momentum=momentum, weight_decay=weight_decay,
                          nesterov=nesterov, **kwargs)
