"""IoU of one class, as a scalar Keras metric (for per-class entries in the training logs)."""

from __future__ import annotations

import keras

from keras_deeplab.training._label_guard import LabelGuard
from keras_deeplab.training._utils import main_logits, squeeze_mask
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class ClassIoU(LabelGuard, keras.metrics.IoU):
    """Intersection-over-union of a single class, taking logits, ignoring the void label.

    Use one per class to get per-class IoU in `model.fit` logs (see `per_class_iou_metrics`).
    Like `MeanIoU` its state is a confusion matrix, summed across replicas, and labels outside
    the classes (other than ``ignore_class``) raise or make the result NaN as in `MeanIoU`.

    Args:
        num_classes: int. Number of classes.
        class_id: int. The class whose IoU is reported.
        ignore_class: int or None. Defaults to 255.
        name: str or None. Defaults to "iou_<class_id>".
        dtype: confusion-matrix dtype. Defaults to "int32".

    Example:
    ```python
    metrics = [kd.metrics.ClassIoU(19, class_id=c, name=f"iou_{n}") for c, n in enumerate(names)]
    ```
    """

    def __init__(self, num_classes, class_id, ignore_class=IGNORE_LABEL, name=None, dtype=None):
        if not 0 <= int(class_id) < int(num_classes):
            raise ValueError(f"class_id must be in [0, {num_classes}), got {class_id}")
        self.class_id = int(class_id)
        super().__init__(num_classes=num_classes, target_class_ids=[int(class_id)],
                         ignore_class=ignore_class, sparse_y_true=True, sparse_y_pred=False,
                         name=name or f"iou_{int(class_id)}", dtype=dtype)
        self._guard_init()

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._guard_labels(squeeze_mask(y_true)),
                                    main_logits(y_pred), sample_weight=sample_weight)

    def result(self):
        return self._guard_result(super().result())

    def get_config(self):
        return {"num_classes": self.num_classes, "class_id": self.class_id,
                "ignore_class": self.ignore_class, "name": self.name, "dtype": self.dtype}


def per_class_iou_metrics(num_classes, class_names=None, ignore_class=IGNORE_LABEL, prefix="iou_"):
    """One `ClassIoU` per class, named ``prefix + class_name`` (or the class id)."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes.")
    names = class_names or [str(c) for c in range(num_classes)]
    return [ClassIoU(num_classes, c, ignore_class=ignore_class,
                     name=prefix + str(n).replace(" ", "_")) for c, n in enumerate(names)]
