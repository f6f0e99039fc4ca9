"""keras_deeplab: DeepLab v2 / v3 / v3+ semantic segmentation for Keras 3.

``import keras_deeplab`` imports every stage (and so registers every serializable class for
``keras.saving.load_model``). The one exception is the ``keras-deeplab`` console script,
which imports the package without its stages so that building its parser (``--help``)
starts without TensorFlow; there the stages load on first use (PEP 562 ``__getattr__``)
and before a subcommand runs (`keras_deeplab.cli.load_stages`).
"""

import os as _os
import sys as _sys

from keras_deeplab.version import __version__  # noqa: F401

#: The stages (subpackages) of the public namespace.
STAGES = ("backbones", "data", "evaluation", "export", "inference", "layers", "models",
          "training")
_TRAINING_ALIASES = ("callbacks", "losses", "metrics")  # kd.losses is kd.training.losses

#: True when the ``keras-deeplab`` console script imported the package (stages load lazily).
_COMMAND_LINE = _os.path.basename(_sys.argv[0] if getattr(_sys, "argv", None) else "") in (
    "keras-deeplab", "keras-deeplab.exe")


def __getattr__(name):
    import importlib

    if name in STAGES:
        return importlib.import_module(f"keras_deeplab.{name}")
    if name in _TRAINING_ALIASES:
        return importlib.import_module(f"keras_deeplab.training.{name}")
    raise AttributeError(f"module 'keras_deeplab' has no attribute {name!r}")


if not _COMMAND_LINE:
    from keras_deeplab import (  # noqa: E402,F401
        backbones,
        data,
        evaluation,
        export,
        inference,
        layers,
        models,
        training,
    )
    from keras_deeplab.training import callbacks, losses, metrics  # noqa: E402,F401
