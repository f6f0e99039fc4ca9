"""Streaming mean IoU over a confusion matrix, taking logits and ignoring the void label."""

from __future__ import annotations

import keras
import numpy as np

from keras_deeplab.np_metrics import iou_from_confusion
from keras_deeplab.training._label_guard import LabelGuard
from keras_deeplab.training._utils import main_logits, squeeze_mask
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class MeanIoU(LabelGuard, keras.metrics.MeanIoU):
    """Mean intersection-over-union for semantic segmentation.

    A thin layer over `keras.metrics.MeanIoU`: it takes the model's logits (argmax inside),
    integer masks of shape (B, H, W, 1), and skips pixels labelled `ignore_class`. The state is
    one confusion matrix; under `tf.distribute` the per-replica matrices are summed before the
    IoU is computed (never an average of per-replica IoUs). Classes that appear neither in the
    labels nor in the predictions are left out of the mean (the Cityscapes convention).

    Labels that are neither in ``[0, num_classes)`` nor ``ignore_class`` are refused (Keras'
    own metric drops them, so raw Cityscapes labelIds scored against 19 classes could report
    1.0): with TensorFlow outside XLA and with PyTorch `update_state` raises an error naming
    the first such value; everywhere their count is kept in ``invalid_labels`` and
    ``result()`` is NaN once it is non-zero.

    Args:
        num_classes: int. Number of classes.
        ignore_class: int or None. Label excluded from the matrix. Defaults to 255.
        name: str. Defaults to "mean_iou".
        dtype: dtype of the confusion matrix. Defaults to "int32" (exact counts up to 2^31
            pixels per cell); use "float64" or "int64" for datasets beyond that.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=kd.losses.CrossEntropy(),
                  metrics=[kd.metrics.MeanIoU(num_classes=19)])
    ```
    """

    def __init__(self, num_classes, ignore_class=IGNORE_LABEL, name="mean_iou", dtype=None):
        super().__init__(num_classes=num_classes, ignore_class=ignore_class,
                         sparse_y_true=True, sparse_y_pred=False, name=name, dtype=dtype)
        self._guard_init()

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._guard_labels(squeeze_mask(y_true)),
                                    main_logits(y_pred), sample_weight=sample_weight)

    def result(self):
        return self._guard_result(super().result())

    def confusion_matrix(self):
        """The accumulated (num_classes, num_classes) matrix, rows = truth, as NumPy int64."""
        return np.asarray(keras.ops.convert_to_numpy(self.total_cm)).astype(np.int64)

    def per_class_iou(self):
        """IoU of every class as a NumPy vector; NaN where a class was never seen."""
        return iou_from_confusion(self.confusion_matrix())

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_class": self.ignore_class,
                "name": self.name, "dtype": self.dtype}
