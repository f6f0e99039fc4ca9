"""Training and evaluation for keras_deeplab: losses, metrics, schedules, callbacks, strategy.

Submodules: `losses` (``kd.losses``), `metrics` (``kd.metrics``), `callbacks`
(``kd.callbacks``), `experiment` (the recipes' train / evaluate wiring).
"""

from keras_deeplab.data.fake_trees import write_fake_cityscapes, write_fake_voc  # noqa: F401
from keras_deeplab.data.labels import CITYSCAPES_CLASSES as CITYSCAPES_CLASS_NAMES  # noqa: F401
from keras_deeplab.evaluation import (  # noqa: F401
    cityscapes_official_evaluation,
    evaluate,
    evaluate_cityscapes_predictions,
    export_cityscapes_predictions,
    format_iou_table,
    predict_probabilities,
)
from keras_deeplab.np_metrics import confusion_matrix  # noqa: F401
from keras_deeplab.training import callbacks, experiment, losses, metrics  # noqa: F401
from keras_deeplab.training.aux import aux_loss, with_aux_targets  # noqa: F401
from keras_deeplab.training.device_augmentation import DeviceAugmentedModel  # noqa: F401
from keras_deeplab.training.distribute import (  # noqa: F401
    check_per_replica_batch,
    get_strategy,
    jax_data_parallel,
    num_replicas,
    sync_batchnorm,
)
from keras_deeplab.training.evaluate_mean_iou import EvaluateMeanIoU  # noqa: F401
from keras_deeplab.training.fit import (  # noqa: F401
    check_dataset_classes,
    check_not_empty,
    check_resume,
    fit,
    training_callbacks,
)
from keras_deeplab.training.manifest import read_manifest, write_manifest  # noqa: F401
from keras_deeplab.training.multiworker import initialize_multi_process, is_chief  # noqa: F401
from keras_deeplab.training.optimizers import KernelDecaySGD, poly_sgd  # noqa: F401
from keras_deeplab.training.precision import PRECISIONS, set_precision  # noqa: F401
from keras_deeplab.training.schedules import PolyDecay  # noqa: F401

__all__ = [
    "callbacks",
    "experiment",
    "losses",
    "metrics",
    "aux_loss",
    "with_aux_targets",
    "CITYSCAPES_CLASS_NAMES",
    "cityscapes_official_evaluation",
    "evaluate_cityscapes_predictions",
    "export_cityscapes_predictions",
    "DeviceAugmentedModel",
    "check_per_replica_batch",
    "get_strategy",
    "jax_data_parallel",
    "num_replicas",
    "sync_batchnorm",
    "confusion_matrix",
    "evaluate",
    "format_iou_table",
    "predict_probabilities",
    "EvaluateMeanIoU",
    "write_fake_cityscapes",
    "write_fake_voc",
    "check_dataset_classes",
    "check_not_empty",
    "check_resume",
    "fit",
    "training_callbacks",
    "read_manifest",
    "write_manifest",
    "initialize_multi_process",
    "is_chief",
    "KernelDecaySGD",
    "poly_sgd",
    "PRECISIONS",
    "set_precision",
    "PolyDecay",
]
