"""The `tf.data` pipeline shared by the dataset sources: decode -> augment -> batch.

Masks are integer class ids; they are only ever resized with nearest neighbour and padded
or filled with the ignore label (255).
"""

import dataclasses

import numpy as np
import tensorflow as tf

IGNORE_LABEL = 255
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclasses.dataclass
class AugmentConfig:
    """DeepLab training augmentation.

    Args:
        min_scale, max_scale: float. Random scale range. Defaults to 0.5 and 2.0.
        scale_step: float or None. Quantise the scale (e.g. 0.25). Defaults to None.
        flip: bool. Random horizontal flip. Defaults to True.
        pad_value: RGB fill for images when padding to the crop. Defaults to the ImageNet mean.
        ignore_label: int. Fill for masks. Defaults to 255.
    """

    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = None
    flip: bool = True
    pad_value: tuple = IMAGENET_MEAN_RGB
    ignore_label: int = IGNORE_LABEL


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


def _augment(example, crop, cfg, seed=None):
    image = tf.cast(example["images"], tf.float32)
    mask = tf.cast(example["segmentation_masks"], tf.int32)
    shape = tf.shape(image)
    scale = tf.random.uniform([], cfg.min_scale, cfg.max_scale)
    if cfg.scale_step:
        scale = cfg.min_scale + tf.round((scale - cfg.min_scale) / cfg.scale_step) * cfg.scale_step
    size = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
    size = tf.maximum(size, 1)
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask, size, method="nearest")
    # Pad to at least the crop: images with the mean, masks with the ignore label.
    pad_h = tf.maximum(crop[0] - size[0], 0)
    pad_w = tf.maximum(crop[1] - size[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    mean = tf.constant(cfg.pad_value, tf.float32)
    image = tf.pad(image - mean, paddings) + mean
    mask = tf.pad(mask - cfg.ignore_label, paddings) + cfg.ignore_label
    stacked = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
    stacked = tf.image.random_crop(stacked, [crop[0], crop[1], 4])
    if cfg.flip:
        stacked = tf.image.random_flip_left_right(stacked)
    return {
        "images": stacked[..., :3],
        "segmentation_masks": tf.cast(tf.round(stacked[..., 3:]), tf.int32),
    }


def make_pipeline(source, batch_size=8, training=False, crop_size=None, output="dict",
                  augment=None, augment_on="data", shuffle=None, shuffle_seed=None,
                  deterministic=True, repeat=False, drop_remainder=None, cache=True,
                  prefetch=True):
    """Builds the batched dataset: (cache) -> (shuffle) -> (augment) -> batch -> prefetch.

    Args:
        source: an object with ``dataset()`` yielding unbatched
            ``{"images", "segmentation_masks"}`` examples.
        batch_size: int. Defaults to 8.
        training: bool. Augment and shuffle. Defaults to False (full resolution).
        crop_size: int or (h, w). Training crop. Required when ``training``.
        output: "dict" or "tuple" (``(images, masks)`` for ``model.fit``).
        augment: AugmentConfig, dict or None (DeepLab defaults).
        augment_on: "data" (here, in tf.data). Defaults to "data".
        shuffle: bool or None (defaults to ``training``).
        shuffle_seed: int or None.
        deterministic: bool. Keep element order with parallel maps. Defaults to True.
        repeat: bool. Repeat forever. Defaults to False.
        drop_remainder: bool or None (defaults to ``training``).
        cache: bool. Cache decoded examples. Defaults to True.
        prefetch: bool. Defaults to True.
    """
    if output not in ("dict", "tuple"):
        raise ValueError(f"output must be 'dict' or 'tuple', got {output!r}.")
    if augment_on != "data":
        raise ValueError(f"augment_on={augment_on!r} is not supported by this pipeline; use 'data'.")
    cfg = augment if isinstance(augment, AugmentConfig) else AugmentConfig(**(augment or {}))
    ds = source.dataset()
    if cache:
        ds = ds.cache()
    if shuffle if shuffle is not None else training:
        ds = ds.shuffle(max(len(source), 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training:
        if crop_size is None:
            raise ValueError("crop_size is required when training=True.")
        crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        ds = ds.map(lambda ex: _augment(ex, crop, cfg), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic)
    else:
        ds = ds.map(lambda ex: {"images": tf.cast(ex["images"], tf.float32),
                                "segmentation_masks": tf.cast(ex["segmentation_masks"], tf.int32)})
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    if output == "tuple":
        ds = ds.map(lambda ex: (ex["images"], ex["segmentation_masks"]))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds
