"""Pixel accuracy over the non-ignored pixels, from the same confusion matrix as MeanIoU."""

from __future__ import annotations

import keras
from keras import ops

from keras_deeplab.training.mean_iou import MeanIoU
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PixelAccuracy(MeanIoU):
    """Fraction of correctly classified pixels, ignoring the void label.

    Computed as ``trace(CM) / sum(CM)`` of a streaming confusion matrix, so it is exact over
    a whole dataset and across replicas. Labels outside the classes (other than
    ``ignore_class``) raise or make the result NaN, as in `MeanIoU`.

    Args:
        num_classes: int. Number of classes.
        ignore_class: int or None. Defaults to 255.
        name: str. Defaults to "pixel_accuracy".
        dtype: confusion-matrix dtype. Defaults to "int32".

    Example:
    ```python
    metrics = [kd.metrics.MeanIoU(19), kd.metrics.PixelAccuracy(19)]
    ```
    """

    def __init__(self, num_classes, ignore_class=IGNORE_LABEL, name="pixel_accuracy", dtype=None):
        super().__init__(num_classes=num_classes, ignore_class=ignore_class, name=name,
                         dtype=dtype)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        return self._guard_result(ops.divide_no_nan(ops.trace(cm), ops.sum(cm)))
