"""Training and evaluation for keras_deeplab: losses, metrics, schedules, callbacks, strategy."""

from keras_deeplab.training import losses, metrics  # noqa: F401
