"""Padding batches so that no replica of a `tf.distribute` strategy gets an empty batch.

A strategy splits each global batch over its replicas; a batch with fewer examples than
replicas (the last, partial batch of an evaluation set, or every batch when the global batch
is smaller than the number of replicas) leaves a replica with zero examples. TensorFlow's
default oneDNN CPU kernels then fail (`Conv2D` on an empty batch returns the wrong channel
count: "input depth must be evenly divisible by filter depth"). The batches are padded
instead with examples that count nothing: zero images whose masks are all the ignore label
(255), which every metric and loss of this package skips.
"""

import tensorflow as tf

from keras_deeplab.utils import IGNORE_LABEL

MASK_KEY = "segmentation_masks"


def replicas_in_scope():
    """Number of replicas of the strategy whose scope is active (1 outside any scope)."""
    if not tf.distribute.has_strategy():
        return 1
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _pad_to(tensor, size, value):
    extra = size - tf.shape(tensor)[0]
    paddings = tf.stack([tf.stack([0, extra])] + [tf.constant([0, 0])] * (tensor.shape.rank - 1))
    padded = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
    padded.set_shape([None] + tensor.shape.as_list()[1:])
    return padded


def pad_batch(batch, multiple, ignore_label=IGNORE_LABEL):
    """Pads a batch (dict with "images"/"segmentation_masks", or (images, masks)) up to the
    next multiple of ``multiple`` examples: images and other entries with 0, masks with
    ``ignore_label``."""
    first = tf.nest.flatten(batch)[0]
    n = tf.shape(first)[0]
    size = tf.maximum((n + multiple - 1) // multiple * multiple, multiple)

    def pad_all(structure, value):
        return tf.nest.map_structure(lambda t: _pad_to(t, size, value), structure)

    if isinstance(batch, dict):
        return {k: pad_all(v, ignore_label if k == MASK_KEY else 0) for k, v in batch.items()}
    if isinstance(batch, tuple) and len(batch) == 2:
        # (images or {"images", ...}, masks): the second element holds the masks
        return pad_all(batch[0], 0), pad_all(batch[1], ignore_label)
    raise TypeError("pad_batches takes batches of {'images', 'segmentation_masks'} dicts or "
                    f"(images, masks) tuples; got {type(batch).__name__}.")


def pad_batches(dataset, multiple, ignore_label=IGNORE_LABEL):
    """``dataset`` with every batch padded to a multiple of ``multiple`` examples.

    Args:
        dataset: batched `tf.data.Dataset` of ``{"images", "segmentation_masks"}`` dicts or
            ``(images, masks)`` tuples.
        multiple: int >= 1, usually ``strategy.num_replicas_in_sync``; 1 returns ``dataset``.
        ignore_label: int. Value of the padded masks. Defaults to 255.

    Returns:
        the padded `tf.data.Dataset`. Padded examples are zero images labelled
        ``ignore_label`` everywhere: they change no confusion matrix and no ignore-aware
        loss, but they are examples (count them out when you count images).
    """
    multiple = int(multiple)
    if multiple < 1:
        raise ValueError(f"pad_batches: multiple must be >= 1, got {multiple}.")
    if multiple == 1:
        return dataset
    return dataset.map(lambda *b: pad_batch(b[0] if len(b) == 1 else b, multiple, ignore_label))
