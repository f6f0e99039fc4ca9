"""Private base class shared by the keras_deeplab segmentation losses."""

from __future__ import annotations

import keras
from keras import ops

from keras_deeplab.training._label_guard import check_labels, invalid_mask
from keras_deeplab.training._utils import squeeze_mask
from keras_deeplab.utils import IGNORE_LABEL


class SegmentationLoss(keras.losses.Loss):
    """Base class: handles masks, the ignore label, float32 maths and auxiliary heads.

    Subclasses implement ``segmentation_loss(labels, logits)`` where ``labels`` is an int32
    ``(B, H, W)`` tensor (ignore label included) and ``logits`` a float32 ``(B, H, W, C)``
    tensor, and return a scalar: the loss of the whole (per-replica) batch.

    The loss is always computed in float32, even under a mixed-precision policy.
    If ``y_pred`` is a dict ``{"logits", "aux_logits"}`` (a model built with an auxiliary
    head) the returned value is ``loss(logits) + aux_weight * loss(aux_logits)``.

    Labels that are neither a class id of the logits nor ``ignore_class`` are refused, never
    skipped: with TensorFlow outside XLA and with PyTorch the call raises an error naming the
    first such value; everywhere the loss is NaN, so `kd.callbacks.StopOnNaN` stops the run.
    """

    def __init__(self, ignore_class=IGNORE_LABEL, aux_weight=0.4, name=None,
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.aux_weight = float(aux_weight)

    def call(self, y_true, y_pred):
        # A (1,)-shaped result, not a scalar: Keras' reduction skips the per-replica scaling
        # (1 / num_replicas under tf.distribute) for 0-d losses, which would double the
        # gradients on 2 replicas.
        return ops.reshape(self._batch_loss(y_true, y_pred), (1,))

    def _batch_loss(self, y_true, y_pred):
        labels = squeeze_mask(y_true)
        if isinstance(y_pred, dict) and "logits" not in y_pred:
            return self._guarded_batch_loss(labels, y_pred)  # raises, naming the keys
        logits = y_pred["logits"] if isinstance(y_pred, dict) else y_pred
        num_classes = logits.shape[-1]
        if num_classes is None:  # unknown until run time: the subclass's own masking applies
            return self._guarded_batch_loss(labels, y_pred)
        labels = check_labels(labels, num_classes, self.ignore_class, type(self).__name__)
        invalid = ops.any(invalid_mask(labels, num_classes, self.ignore_class))
        return ops.where(invalid, float("nan"), self._guarded_batch_loss(labels, y_pred))

    def _guarded_batch_loss(self, labels, y_pred):
        if isinstance(y_pred, dict):
            if "logits" not in y_pred:
                raise ValueError(
                    f"{type(self).__name__}: the model output dict has keys {sorted(y_pred)}; "
                    "expected 'logits' (and optionally 'aux_logits')."
                )
            loss = self.segmentation_loss(labels, ops.cast(y_pred["logits"], "float32"))
            if "aux_logits" in y_pred and self.aux_weight:
                aux = self.segmentation_loss(labels, ops.cast(y_pred["aux_logits"], "float32"))
                loss = loss + self.aux_weight * aux
            return loss
        return self.segmentation_loss(labels, ops.cast(y_pred, "float32"))

    def segmentation_loss(self, labels, logits):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({"ignore_class": self.ignore_class, "aux_weight": self.aux_weight})
        return config
