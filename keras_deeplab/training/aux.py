"""Auxiliary-head training: per-output losses and targets for ``{"logits", "aux_logits"}``.

A model built with ``aux_head=True`` returns a dict. Keras applies one loss per output and
needs one target per output, so compile with `aux_loss` and feed `with_aux_targets`::

    loss, loss_weights = kd.training.aux_loss(kd.losses.CrossEntropy(), aux_weight=0.4)
    model.compile(optimizer=..., loss=loss, loss_weights=loss_weights,
                  metrics={"logits": [kd.metrics.MeanIoU(19)]})
    model.fit(kd.training.with_aux_targets(train_ds), ...)

The total is ``loss(logits) + 0.4 * loss(aux_logits)`` (PSPNet's deep supervision). The
auxiliary head only matters for training; evaluation and export use ``"logits"``.
"""

from __future__ import annotations

import copy

from keras_deeplab.data.batches import main_masks, unpack_batch
from keras_deeplab.utils import AUGMENT_PARAMS


def aux_loss(loss, aux_weight=None):
    """``(loss dict, loss_weights dict)`` for a model with an auxiliary head.

    Args:
        loss: a keras_deeplab loss (used for both outputs; a copy for the auxiliary one).
        aux_weight: float or None. Weight of the auxiliary loss. Defaults to the loss's own
            ``aux_weight`` (0.4).

    Returns:
        ``({"logits": loss, "aux_logits": aux}, {"logits": 1.0, "aux_logits": aux_weight})``.
    """
    weight = float(getattr(loss, "aux_weight", 0.4) if aux_weight is None else aux_weight)
    aux = copy.deepcopy(loss)
    if hasattr(aux, "name"):
        aux.name = f"aux_{loss.name}"
    return {"logits": loss, "aux_logits": aux}, {"logits": 1.0, "aux_logits": weight}


def _split(element):
    """(inputs, main masks); inputs keep the augmentation parameters of
    ``augment_on="device"`` batches (``{"images", "augment_params"}``)."""
    batch = unpack_batch(element)
    if batch.images is None or batch.masks is None:
        raise ValueError("with_aux_targets needs batches with images and masks "
                         "({'images', 'segmentation_masks'} dicts or (images, masks) tuples).")
    inputs = (batch.images if batch.params is None
              else {"images": batch.images, AUGMENT_PARAMS: batch.params})
    return inputs, main_masks(batch.masks)


def with_aux_targets(dataset):
    """Maps a dataset of ``(images, masks)`` or dict elements to
    ``(images, {"logits": masks, "aux_logits": masks})``.

    Works on `tf.data.Dataset` (mapped lazily) and on Python iterables of batches.
    """
    if hasattr(dataset, "map") and hasattr(dataset, "element_spec"):
        def fn(*element):
            images, masks = _split(element[0] if len(element) == 1 else element)
            return images, {"logits": masks, "aux_logits": masks}

        return dataset.map(fn)
    return [(x, {"logits": y, "aux_logits": y}) for x, y in map(_split, dataset)]
