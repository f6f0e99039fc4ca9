"""keras_deeplab: DeepLab v2 / v3 / v3+ semantic segmentation for Keras 3."""

from keras_deeplab.version import __version__  # noqa: F401

from keras_deeplab import (  # noqa: E402,F401  # noqa: E402,F401
    backbones,
    data,  # noqa: E402,F401
    evaluation,
    export,
    inference,
    layers,
    models,
    training,  # noqa: E402,F401
)
from keras_deeplab.training import callbacks, losses, metrics  # noqa: E402,F401
