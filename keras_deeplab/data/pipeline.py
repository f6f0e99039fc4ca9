"""Shared `tf.data` pipeline: sources -> decode -> (augment) -> batch -> prefetch.

Every dataset function in `keras_deeplab.data` builds a *source* (something that yields single
examples `{"images": float32 (H, W, 3) in [0, 255], "segmentation_masks": int32 (H, W, 1)}`) and
hands it to `make_pipeline`, which adds shuffling, caching, augmentation, batching and
prefetching the same way for all of them.
"""

from __future__ import annotations

import tensorflow as tf

from keras_deeplab.data import augment as _augment

IGNORE_LABEL = 255


class ArraySource:
    """In-memory source of `(images, masks)` NumPy arrays.

    Args:
        images: array (N, H, W, 3), uint8 or float in [0, 255].
        masks: array (N, H, W, 1) or (N, H, W) of class ids (255 = ignore).
        num_classes: int. Number of classes.
        name: str. Name used in messages. Defaults to `"arrays"`.
    """

    def __init__(self, images, masks, num_classes, name="arrays"):
        if masks.ndim == 3:
            masks = masks[..., None]
        if len(images) != len(masks) or images.shape[1:3] != masks.shape[1:3]:
            raise ValueError(
                f"{name}: images {images.shape} and masks {masks.shape} do not match; pass one "
                "mask of the same height and width per image.")
        self.images, self.masks = images, masks
        self.num_classes = int(num_classes)
        self.name = name

    def __len__(self):
        return len(self.images)

    def dataset(self):
        ds = tf.data.Dataset.from_tensor_slices((self.images, self.masks))
        return ds.map(lambda i, m: {"images": tf.cast(i, tf.float32),
                                    "segmentation_masks": tf.cast(m, tf.int32)})


def make_pipeline(source, batch_size=8, training=False, crop_size=None, output="dict",
                  augment=None, augment_on="data", shuffle=None, shuffle_seed=None,
                  deterministic=True, repeat=False, drop_remainder=None, cache=True,
                  prefetch=True):
    """Turns a source into a batched, prefetched `tf.data.Dataset`.

    Args:
        source: an object with `dataset()` (single examples) and `__len__`.
        batch_size: int. Defaults to 8.
        training: bool. Shuffle and augment (random scale, pad, crop, flip). Defaults to False
            (eval mode: full resolution, no augmentation).
        crop_size: int or (h, w). Training crop size. Required when `training`.
        output: str. `"dict"` or `"tuple"` (`(images, masks)` for `model.fit`).
        augment: dict or None. Keyword arguments for `kd.data.augment.augment_example`.
        augment_on: str. `"data"` (tf.data on CPU) or `"device"` (no augmentation here; the
            caller augments the batch on the accelerator).
        shuffle: bool or None. Defaults to `training`.
        shuffle_seed: int or None. Seed for shuffling and augmentation.
        deterministic: bool. Keep element order fixed in parallel maps. Defaults to True.
        repeat: bool. Repeat forever. Defaults to False.
        drop_remainder: bool or None. Defaults to `training`.
        cache: bool. Cache decoded examples in memory. Defaults to True.
        prefetch: bool. Prefetch with AUTOTUNE. Defaults to True.
    """
    if output not in ("dict", "tuple"):
        raise ValueError(f"output must be 'dict' or 'tuple'; got {output!r}.")
    if augment_on not in ("data", "device"):
        raise ValueError(f"augment_on must be 'data' or 'device'; got {augment_on!r}.")
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    ds = source.dataset().with_options(options)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(len(source), 10_000), seed=shuffle_seed,
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training and augment_on == "data":
        if crop_size is None:
            raise ValueError("crop_size is required when training=True.")
        kwargs = dict(augment or {})
        kwargs.setdefault("crop_size", crop_size)
        seed = 0 if shuffle_seed is None else int(shuffle_seed)
        ds = ds.enumerate().map(
            lambda i, ex: _augment.augment_example(ex, seed=tf.stack([seed, tf.cast(i, tf.int32)]),
                                                   **kwargs),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if output == "tuple":
        ds = ds.map(lambda ex: (ex["images"], ex["segmentation_masks"]))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds
