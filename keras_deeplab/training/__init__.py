"""Training and evaluation for keras_deeplab: losses, metrics, schedules, callbacks, strategy."""

from keras_deeplab.training import losses, metrics  # noqa: F401
from keras_deeplab.training.optimizers import KernelDecaySGD, poly_sgd  # noqa: F401
from keras_deeplab.training.schedules import PolyDecay  # noqa: F401
