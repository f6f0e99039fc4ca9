"""Online hard example mining (OHEM) cross-entropy for segmentation."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_deeplab.training.cross_entropy import CrossEntropy
from keras_deeplab.utils import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="keras_deeplab")
class OHEMCrossEntropy(CrossEntropy):
    """Cross-entropy averaged over the hard pixels only.

    A valid pixel is hard when the probability of its true class is below ``threshold``.
    At least ``min_kept`` pixels are kept per (per-replica) batch: when fewer pixels are hard,
    the threshold is raised to the probability of the ``min_kept``-th hardest pixel (the rule
    of PSPNet / mmsegmentation's ``OHEMPixelSampler``). In loss terms, with
    ``l_k`` the ``min_kept``-th largest per-pixel loss, the kept pixels are those with
    ``loss >= min(-log(threshold), l_k)``.

    Args:
        threshold: float in (0, 1]. Probability below which a pixel is hard. Defaults to 0.7.
        min_kept: int. Minimum number of pixels kept per batch. Defaults to 100_000
            (the usual Cityscapes setting for 769 crops, batch 8; use less for small crops).
        ignore_class: int or None. Defaults to 255.
        class_weights: optional per-class weights, as in `CrossEntropy`.
        aux_weight: float. Auxiliary head weight for dict outputs. Defaults to 0.4.
        label_smoothing: float. Label smoothing of the per-pixel losses. Defaults to 0.
        name: str. Defaults to "ohem_cross_entropy".
        reduction: Keras reduction (the loss is a scalar per batch).

    Example:
    ```python
    loss = kd.losses.OHEMCrossEntropy(threshold=0.7, min_kept=100_000)
    ```

    Reference: Shrivastava et al., "Training Region-based Object Detectors with Online Hard
    Example Mining", CVPR 2016; Wu et al., "High-performance Semantic Segmentation Using Very
    Deep Fully Convolutional Networks", 2016.
    """

    def __init__(self, threshold=0.7, min_kept=100_000, ignore_class=IGNORE_LABEL,
                 class_weights=None, aux_weight=0.4, label_smoothing=0.0, name="ohem_cross_entropy",
                 reduction="sum_over_batch_size"):
        super().__init__(ignore_class=ignore_class, class_weights=class_weights,
                         aux_weight=aux_weight, label_smoothing=label_smoothing, name=name,
                         reduction=reduction)
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if int(min_kept) < 1:
            raise ValueError(f"min_kept must be >= 1, got {min_kept}")
        self.threshold = float(threshold)
        self.min_kept = int(min_kept)

    def segmentation_loss(self, labels, logits):
        per_pixel, valid = self.pixel_losses(labels, logits)
        flat = ops.reshape(per_pixel, (-1,))
        flat_valid = ops.reshape(valid, (-1,))
        # Invalid pixels get -1 so they are never among the k largest valid losses.
        ranked = ops.where(flat_valid > 0, flat, -ops.ones_like(flat))
        # The min_kept-th largest loss (a full sort: works with unknown batch sizes).
        descending = -ops.sort(-ranked)
        index = ops.minimum(self.min_kept, ops.shape(ranked)[0]) - 1
        kth = ops.take(descending, index)
        loss_threshold = ops.minimum(ops.convert_to_tensor(-math.log(self.threshold)), kth)
        keep = ops.cast(ops.greater_equal(flat, loss_threshold), "float32") * flat_valid
        weights = keep
        if self.class_weights is not None:
            num_classes = logits.shape[-1]
            table = ops.convert_to_tensor(self.class_weights, dtype="float32")
            safe = ops.where(flat_valid > 0, ops.reshape(labels, (-1,)), 0)
            safe = ops.clip(safe, 0, num_classes - 1)
            weights = keep * ops.take(table, safe)
        return ops.divide_no_nan(ops.sum(flat * weights), ops.sum(weights))

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold, "min_kept": self.min_kept})
        return config
