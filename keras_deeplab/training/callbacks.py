"""Training callbacks (``kd.callbacks``)."""

from keras_deeplab.training.checkpoints import AtomicModelCheckpoint, RunBackup  # noqa: F401
from keras_deeplab.training.evaluate_mean_iou import EvaluateMeanIoU  # noqa: F401
from keras_deeplab.training.manifest import ManifestWriter  # noqa: F401
from keras_deeplab.training.stop_on_nan import NonFiniteLossError, StopOnNaN  # noqa: F401
from keras_deeplab.training.tensorboard_masks import TensorBoardMasks  # noqa: F401

__all__ = ["AtomicModelCheckpoint", "EvaluateMeanIoU", "ManifestWriter", "NonFiniteLossError",
           "RunBackup", "StopOnNaN", "TensorBoardMasks"]
