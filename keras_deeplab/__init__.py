"""keras_deeplab: DeepLab v2 / v3 / v3+ semantic segmentation for Keras 3."""

__version__ = "0.1.0"

from keras_deeplab import backbones, layers, models  # noqa: E402,F401
from keras_deeplab import data  # noqa: E402,F401
from keras_deeplab import training  # noqa: E402,F401
from keras_deeplab import export, inference  # noqa: E402,F401
from keras_deeplab.training import callbacks, losses, metrics  # noqa: E402,F401
