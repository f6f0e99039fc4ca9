"""Pixel-wise (optionally class-weighted) softmax cross-entropy that ignores a label."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_deeplab.training._base_loss import SegmentationLoss
from keras_deeplab.training._utils import valid_labels
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class CrossEntropy(SegmentationLoss):
    """Softmax cross-entropy over pixels, ignoring the void label.

    Without class weights this is exactly
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``
    (the per-pixel values come from Keras' own ``sparse_categorical_crossentropy``): the mean
    of the per-pixel losses over the pixels that are not ignored. With ``class_weights`` every
    pixel's loss is multiplied by the weight of its true class and the sum is divided by the
    sum of those weights (the convention of PyTorch's ``CrossEntropyLoss(weight=...)``), so the
    loss scale does not depend on the weights' overall magnitude.

    Args:
        ignore_class: int or None. Label value excluded from the loss. Defaults to 255.
        class_weights: sequence of float or None. One weight per class, e.g. from
            `keras_deeplab.losses.compute_class_weights`. Defaults to None (unweighted).
        aux_weight: float. Weight of the auxiliary head's loss when the model returns a dict
            `{"logits", "aux_logits"}` and this loss is called on the whole dict. Defaults
            to 0.4 (PSPNet). See `keras_deeplab.training.aux_loss` for the compile-time form.
        label_smoothing: float. Label smoothing in [0, 1). Defaults to 0.
        name: str. Defaults to "cross_entropy".
        reduction: Keras reduction; the loss is already a scalar per batch. Defaults to
            "sum_over_batch_size".

    Example:
    ```python
    loss = kd.losses.CrossEntropy(ignore_class=255)
    model.compile(optimizer="sgd", loss=loss)
    ```

    Reference: Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
    """

    def __init__(
        self,
        ignore_class=IGNORE_LABEL,
        class_weights=None,
        aux_weight=0.4,
        label_smoothing=0.0,
        name="cross_entropy",
        reduction="sum_over_batch_size",
    ):
        super().__init__(ignore_class=ignore_class, aux_weight=aux_weight, name=name,
                         reduction=reduction)
        if class_weights is not None:
            class_weights = [float(w) for w in np.asarray(class_weights).reshape(-1)]
            if any(w < 0 or not np.isfinite(w) for w in class_weights):
                raise ValueError(f"class_weights must be finite and >= 0, got {class_weights}")
        self.class_weights = class_weights
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def pixel_losses(self, labels, logits):
        """Per-pixel cross-entropy (B, H, W) and the float validity mask (B, H, W)."""
        num_classes = logits.shape[-1]
        safe, valid = valid_labels(labels, num_classes, self.ignore_class)
        if self.label_smoothing:
            one_hot = ops.one_hot(safe, num_classes, dtype="float32")
            one_hot = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
            per_pixel = keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True)
        else:
            # Keras' own implementation (its ignore_class handling is replaced by our mask,
            # which also covers labels outside [0, num_classes)).
            per_pixel = keras.losses.sparse_categorical_crossentropy(
                safe, logits, from_logits=True)
        return per_pixel * valid, valid

    def segmentation_loss(self, labels, logits):
        per_pixel, valid = self.pixel_losses(labels, logits)
        weights = valid
        if self.class_weights is not None:
            num_classes = logits.shape[-1]
            if len(self.class_weights) != num_classes:
                raise ValueError(
                    f"CrossEntropy has {len(self.class_weights)} class_weights but the model "
                    f"predicts {num_classes} classes."
                )
            table = ops.convert_to_tensor(np.asarray(self.class_weights, "float32"))
            safe, _ = valid_labels(labels, num_classes, self.ignore_class)
            weights = ops.take(table, safe) * valid
        total = ops.sum(per_pixel * weights)
        norm = ops.sum(weights)
        return ops.divide_no_nan(total, norm)

    def get_config(self):
        config = super().get_config()
        config.update({"class_weights": self.class_weights,
                       "label_smoothing": self.label_smoothing})
        return config
