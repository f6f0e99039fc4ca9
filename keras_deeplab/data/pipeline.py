"""The `tf.data` pipeline shared by the dataset sources: decode -> augment -> batch.

Masks are integer class ids; they are only ever resized with nearest neighbour and padded
or filled with the ignore label (255).
"""

import os

import numpy as np
import tensorflow as tf

from keras_deeplab.data.augment import (
    IMAGENET_MEAN_RGB,
    NUM_RANDOM,
    AugmentConfig,
    _TFOps,
    warp_batch,
)
from keras_deeplab.data.padding import pad_batches, replicas_in_scope
from keras_deeplab.utils import AUGMENT_PARAMS, IGNORE_LABEL

__all__ = ["ArraySource", "AugmentConfig", "IGNORE_LABEL", "IMAGENET_MEAN_RGB", "make_pipeline"]


class ArraySource:
    """In-memory images (N, H, W, 3) and masks (N, H, W, 1) as a pipeline source.

    Args:
        images: uint8 or float array (N, H, W, 3) with values in [0, 255].
        masks: integer array (N, H, W) or (N, H, W, 1).
        num_classes: int. Mask values must be < num_classes or equal the ignore label.
        name: str. Used in error messages.
    """

    def __init__(self, images, masks, num_classes, name="arrays", ignore_label=IGNORE_LABEL):
        images = np.asarray(images)
        masks = np.asarray(masks)
        if masks.ndim == 3:
            masks = masks[..., None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{name}: images must be (N, H, W, 3) RGB, got shape {images.shape}.")
        if images.shape[:3] != masks.shape[:3]:
            raise ValueError(
                f"{name}: images {images.shape[:3]} and masks {masks.shape[:3]} differ in size."
            )
        bad = (masks >= num_classes) & (masks != ignore_label)
        if bad.any():
            raise ValueError(
                f"{name}: mask value {int(masks[bad][0])} is neither a class id in "
                f"[0, {num_classes}) nor the ignore label {ignore_label}."
            )
        self.images, self.masks, self.num_classes, self.name = images, masks, num_classes, name

    def __len__(self):
        return len(self.images)

    def dataset(self):
        return tf.data.Dataset.from_tensor_slices(
            {"images": self.images, "segmentation_masks": self.masks.astype("int32")}
        )


def _params(image, seed):
    """One example's augmentation row: uniform numbers, then its height and width.

    The numbers come from a stateless generator keyed by a per-example seed that
    `tf.data.Dataset.random(rerandomize_each_iteration=True)` draws: deterministic under a
    global seed, yet new every epoch (a stateful op in a map would repeat the same draws in
    every epoch once `keras.utils.set_random_seed` is called).
    """
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    u = tf.random.stateless_uniform([NUM_RANDOM], seed=tf.stack([seed, tf.constant(0, tf.int64)]))
    return tf.concat([u, size], axis=0)


def _augment(example, seed, crop, cfg):
    """The tf.data path: `warp_batch` with TF ops on a batch of one."""
    images, masks = warp_batch(_TFOps(), example["images"][None],
                               example["segmentation_masks"][None],
                               _params(example["images"], seed)[None], crop, cfg)
    return {"images": images[0], "segmentation_masks": masks[0]}


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def lookup_masks(example, table):
    """``example`` with its masks mapped through ``table`` (raw value -> class id)."""
    masks = tf.gather(tf.constant(np.asarray(table, np.int32)),
                      tf.cast(example["segmentation_masks"], tf.int32))
    return {**example, "segmentation_masks": masks}


def _examples_and_lookup(source):
    """The source's decoded examples and the mask lookup still to apply (or None).

    A source may hand over raw masks (``raw_dataset()``) plus a value -> class table
    (``mask_lookup``): the pipeline applies it after the crop, on far fewer pixels.
    """
    lookup = getattr(source, "mask_lookup", None) if hasattr(source, "raw_dataset") else None
    return (source.dataset(), None) if lookup is None else (source.raw_dataset(), lookup)


def estimated_bytes(source, examples=None):
    """Decoded size of a source: exact for arrays, else the first example times its length.

    ``examples`` is the source's decoded dataset when the caller already built it.
    """
    if isinstance(source, ArraySource):
        return int(source.images.nbytes + source.masks.nbytes)
    if examples is None:
        examples, _ = _examples_and_lookup(source)
    first = next(iter(examples.take(1)), None)
    if first is None:
        return 0
    per_example = sum(int(np.prod(t.shape)) * t.dtype.size for t in first.values())
    return per_example * len(source)


def _resolve_cache(source, cache, examples=None):
    """True, False or a file path, from ``cache`` (``"auto"`` caches below 1/4 of the RAM)."""
    if cache != "auto":
        return cache
    memory = _physical_memory()
    return memory is not None and estimated_bytes(source, examples) <= memory // 4


def make_pipeline(source, batch_size=8, training=False, crop_size=None, output="dict",
                  augment=None, augment_on="data", shuffle=None, shuffle_seed=None,
                  deterministic=True, repeat=False, drop_remainder=None, cache="auto",
                  prefetch=True, augment_seed=None, pad_to_multiple=None):
    """Builds the batched dataset: (cache) -> (shuffle) -> (augment) -> batch -> prefetch.

    Images stay uint8 until they are cropped (a quarter of the memory in the cache and no
    float copy of the full-size image); batches hold float32 images in [0, 255] and int32 masks.

    Args:
        source: an object with ``dataset()`` yielding unbatched
            ``{"images", "segmentation_masks"}`` examples and ``__len__``.
        batch_size: int. Defaults to 8.
        training: bool. Augment and shuffle. Defaults to False (full resolution).
        crop_size: int or (h, w). Training crop. Required when ``training``.
        output: "dict" or "tuple" (``(images, masks)`` for ``model.fit``).
        augment: AugmentConfig, dict or None (DeepLab defaults).
        augment_on: "data" (augment here, in tf.data on the CPU) or "device". With "device"
            the batches hold the full-size uint8 images and masks (padded to the largest in
            the batch) plus an ``"augment_params"`` row per example (the random numbers, drawn
            here); a ``kd.data.SegmentationAugmentation`` turns them into crops on the
            accelerator, with the same distribution as "data". Wrap the model in
            ``kd.training.DeviceAugmentedModel(model, ...)`` (``kd.training.experiment.train``
            and the recipes do it for ``augment_on="device"``). The tuple form is
            ``({"images", "augment_params"}, masks)``.
        shuffle: bool or None (defaults to ``training``).
        shuffle_seed: int or None.
        deterministic: bool. Keep element order with parallel maps. Defaults to True.
        repeat: bool. Repeat forever. Defaults to False.
        drop_remainder: bool or None (defaults to ``training``).
        cache: "auto", bool or a file path. Cache the decoded examples in memory (True), in
            files at that path prefix (str), or not at all (False). "auto" (the default)
            caches in memory when the decoded dataset (estimated from its first example)
            takes at most a quarter of the RAM: the synthetic set and small custom sets, but
            not Cityscapes' 2975 training pairs (~25 GB decoded).
        prefetch: bool. Defaults to True.
        augment_seed: int or None. Seed of the augmentation draws (new draws every epoch
            either way). Defaults to None (from the global seed if one is set).
        pad_to_multiple: int or None. Evaluation batches (``training=False``) are padded to a
            multiple of this many examples with zero images labelled 255 everywhere (they
            count in no metric or ignore-aware loss), so that no replica of a
            `tf.distribute` strategy gets an empty batch (see `keras_deeplab.data.padding`).
            Defaults to None: the replicas of the strategy whose scope is active when the
            pipeline is built (1, no padding, outside any scope).
    """
    if output not in ("dict", "tuple"):
        raise ValueError(f"output must be 'dict' or 'tuple', got {output!r}.")
    if augment_on not in ("data", "device"):
        raise ValueError(f"augment_on must be 'data' or 'device', got {augment_on!r}.")
    cfg = AugmentConfig.coerce(augment)
    ds, lookup = _examples_and_lookup(source)
    if lookup is not None and cfg.ignore_label < len(lookup) and \
            int(lookup[cfg.ignore_label]) != cfg.ignore_label:
        raise ValueError("The source's mask lookup must map the ignore label to itself.")

    def apply_lookup(ex):
        return ex if lookup is None else lookup_masks(ex, lookup)

    cache = _resolve_cache(source, cache, ds)
    if isinstance(cache, str):
        ds = ds.cache(cache)
    elif cache:
        ds = ds.cache()
    if shuffle if shuffle is not None else training:
        ds = ds.shuffle(max(len(source), 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    drop = training if drop_remainder is None else drop_remainder
    if training:
        if crop_size is None:
            raise ValueError("crop_size is required when training=True.")
        crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds))
        if augment_on == "data":
            ds = ds.map(lambda ex, seed: apply_lookup(_augment(ex, seed, crop, cfg)),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
            ds = ds.batch(batch_size, drop_remainder=drop)
        else:
            ds = ds.map(lambda ex, seed: {**apply_lookup(ex),
                                          AUGMENT_PARAMS: _params(ex["images"], seed)},
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
            ds = ds.padded_batch(batch_size, drop_remainder=drop)
    else:
        ds = ds.map(lambda ex: {"images": tf.cast(ex["images"], tf.float32),
                                "segmentation_masks": tf.cast(
                                    apply_lookup(ex)["segmentation_masks"], tf.int32)},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        ds = ds.batch(batch_size, drop_remainder=drop)
        multiple = replicas_in_scope() if pad_to_multiple is None else int(pad_to_multiple)
        if multiple > 1:
            ds = pad_batches(ds, multiple, cfg.ignore_label)
    if output == "tuple":
        if training and augment_on == "device":
            ds = ds.map(lambda ex: ({"images": ex["images"], AUGMENT_PARAMS: ex[AUGMENT_PARAMS]},
                                    ex["segmentation_masks"]))
        else:
            ds = ds.map(lambda ex: (ex["images"], ex["segmentation_masks"]))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds
