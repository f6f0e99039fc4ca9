"""Lovasz-softmax loss: a convex surrogate of the per-class Jaccard (IoU) loss."""

from __future__ import annotations

import keras
from keras import ops

from keras_deeplab.training._base_loss import SegmentationLoss
from keras_deeplab.training._utils import valid_labels
from keras_deeplab.utils import IGNORE_LABEL


def _lovasz_grad(gt_sorted):
    """Gradient of the Lovasz extension w.r.t. sorted errors, along the last axis."""
    gts = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(gt_sorted, axis=-1)
    union = gts + ops.cumsum(1.0 - gt_sorted, axis=-1)
    jaccard = 1.0 - ops.divide_no_nan(intersection, union)
    return ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class LovaszSoftmax(SegmentationLoss):
    """Lovasz-softmax loss (Berman et al., 2018), the "flat" batch version.

    For each class the absolute errors ``|fg_c - p_c|`` of all valid pixels in the batch are
    sorted in decreasing order and dotted with the gradient of the Lovasz extension of the
    Jaccard loss; the per-class values are averaged over all classes or only those present in
    the labels. Ignored pixels get zero error and zero foreground, which places them at the
    end of the sort where they cannot change the value.

    Args:
        ignore_class: int or None. Label value excluded from the loss. Defaults to 255.
        classes: "present" or "all". Which classes are averaged. Defaults to "present"
            (the reference implementation's default).
        per_image: bool. Compute the loss per image and average over the batch.
            Defaults to False.
        aux_weight: float. Weight of the auxiliary head's loss for dict outputs. Defaults to 0.4.
        name: str. Defaults to "lovasz_softmax".
        reduction: Keras reduction (the loss is a scalar per batch).

    Example:
    ```python
    model.compile(optimizer="adam", loss=kd.losses.LovaszSoftmax())
    ```

    Reference: Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss: A tractable surrogate
    for the optimization of the intersection-over-union measure in neural networks", CVPR 2018.
    """

    def __init__(self, ignore_class=IGNORE_LABEL, classes="present", per_image=False,
                 aux_weight=0.4, name="lovasz_softmax", reduction="sum_over_batch_size"):
        super().__init__(ignore_class=ignore_class, aux_weight=aux_weight, name=name,
                         reduction=reduction)
        if classes not in ("all", "present"):
            raise ValueError(f"classes must be 'all' or 'present', got {classes!r}")
        self.classes = classes
        self.per_image = bool(per_image)

    def _flat(self, labels, probs, valid):
        # labels (N,), probs (N, C), valid (N,) -> scalar
        num_classes = probs.shape[-1]
        fg = ops.one_hot(labels, num_classes, dtype="float32") * valid[:, None]
        errors = ops.abs(fg - probs) * valid[:, None]
        errors = ops.transpose(errors)  # (C, N)
        fg = ops.transpose(fg)
        order = ops.argsort(-errors, axis=-1)
        errors_sorted = ops.take_along_axis(errors, order, axis=-1)
        fg_sorted = ops.take_along_axis(fg, order, axis=-1)
        per_class = ops.sum(errors_sorted * ops.stop_gradient(_lovasz_grad(fg_sorted)), axis=-1)
        if self.classes == "all":
            return ops.mean(per_class)
        present = ops.cast(ops.sum(fg, axis=-1) > 0, "float32")
        return ops.divide_no_nan(ops.sum(per_class * present), ops.sum(present))

    def segmentation_loss(self, labels, logits):
        num_classes = logits.shape[-1]
        safe, valid = valid_labels(labels, num_classes, self.ignore_class)
        probs = ops.softmax(logits, axis=-1)
        if self.per_image:
            shape = ops.shape(logits)
            b = shape[0]
            safe = ops.reshape(safe, (b, -1))
            valid = ops.reshape(valid, (b, -1))
            probs = ops.reshape(probs, (b, -1, num_classes))
            losses = ops.vectorized_map(lambda t: self._flat(t[0], t[1], t[2]),
                                        (safe, probs, valid))
            return ops.mean(losses)
        return self._flat(ops.reshape(safe, (-1,)), ops.reshape(probs, (-1, num_classes)),
                          ops.reshape(valid, (-1,)))

    def get_config(self):
        config = super().get_config()
        config.update({"classes": self.classes, "per_image": self.per_image})
        return config
