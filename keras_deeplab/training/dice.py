"""Soft Dice loss for multi-class segmentation, ignoring a label."""

from __future__ import annotations

import keras
from keras import ops

from keras_deeplab.training._base_loss import SegmentationLoss
from keras_deeplab.training._utils import valid_labels
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class DiceLoss(SegmentationLoss):
    """Multi-class soft Dice loss on softmax probabilities.

    For every class ``c`` over all valid pixels ``i`` of the batch::

        dice_c = (2 * sum_i p_ic g_ic + smooth) / (sum_i p_ic + sum_i g_ic + smooth)

    with ``p`` the softmax probabilities and ``g`` the one-hot labels; pixels carrying the
    ignore label contribute nothing. The loss is ``1 - mean_c dice_c`` over all classes
    (``classes="all"``) or only over the classes present in the labels (``classes="present"``).

    Args:
        ignore_class: int or None. Label value excluded from the loss. Defaults to 255.
        smooth: float. Additive smoothing of numerator and denominator. Defaults to 1.0.
        classes: "all" or "present". Which classes are averaged. Defaults to "present".
        aux_weight: float. Weight of the auxiliary head's loss for dict outputs. Defaults to 0.4.
        name: str. Defaults to "dice".
        reduction: Keras reduction (the loss is a scalar per batch).

    Example:
    ```python
    model.compile(optimizer="adam", loss=kd.losses.DiceLoss(ignore_class=255))
    ```

    Reference: Milletari et al., "V-Net", 3DV 2016; Sudre et al., "Generalised Dice overlap as
    a deep learning loss function", DLMIA 2017.
    """

    def __init__(self, ignore_class=IGNORE_LABEL, smooth=1.0, classes="present", aux_weight=0.4,
                 name="dice", reduction="sum_over_batch_size"):
        super().__init__(ignore_class=ignore_class, aux_weight=aux_weight, name=name,
                         reduction=reduction)
        if classes not in ("all", "present"):
            raise ValueError(f"classes must be 'all' or 'present', got {classes!r}")
        self.smooth = float(smooth)
        self.classes = classes

    def segmentation_loss(self, labels, logits):
        num_classes = logits.shape[-1]
        safe, valid = valid_labels(labels, num_classes, self.ignore_class)
        valid = valid[..., None]
        probs = ops.softmax(logits, axis=-1) * valid
        one_hot = ops.one_hot(safe, num_classes, dtype="float32") * valid
        axes = (0, 1, 2)
        intersection = ops.sum(probs * one_hot, axis=axes)
        denom = ops.sum(probs, axis=axes) + ops.sum(one_hot, axis=axes)
        dice = (2.0 * intersection + self.smooth) / (denom + self.smooth)
        if self.classes == "all":
            return 1.0 - ops.mean(dice)
        present = ops.cast(ops.sum(one_hot, axis=axes) > 0, "float32")
        num_present = ops.sum(present)
        # No labelled pixel at all: nothing to learn from, the loss is 0.
        return ops.where(num_present > 0,
                         1.0 - ops.divide_no_nan(ops.sum(dice * present), num_present), 0.0)

    def get_config(self):
        config = super().get_config()
        config.update({"smooth": self.smooth, "classes": self.classes})
        return config
