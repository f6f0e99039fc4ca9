"""Minimal tf.data readers for the official Cityscapes and VOC layouts (private fallback).

Used by `experiment.load_dataset` only when `keras_deeplab.data` does not provide the
loader (e.g. a checkout without the data package); it warns when it is used. It implements
the DeepLab training augmentation (random scale, pad with the mean / ignore label, random
crop, horizontal flip; masks resized with nearest neighbour only), nothing more.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from keras_deeplab.training.cityscapes_export import (
    ground_truth_path,
    labelid_to_trainid_lut,
    list_cityscapes_images,
)

MEAN_RGB = (123.675, 116.28, 103.53)


def cityscapes_files(data_dir, split):
    images = list_cityscapes_images(data_dir, split)
    masks = [ground_truth_path(data_dir, p, split) for p in images]
    missing = [m for m in masks if not os.path.exists(m)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images have no ground truth, e.g. {missing[0]}")
    return images, masks


def voc_files(data_dir, split):
    voc = os.path.join(data_dir, "VOC2012")
    if not os.path.isdir(voc):
        voc = data_dir
    list_path = os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.exists(list_path):
        raise FileNotFoundError(f"VOC split list {list_path} not found.")
    with open(list_path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{list_path} lists no images.")
    mask_dir = "SegmentationClassAug" if split == "train_aug" else "SegmentationClass"
    images = [os.path.join(voc, "JPEGImages", f"{i}.jpg") for i in ids]
    masks = [os.path.join(voc, mask_dir, f"{i}.png") for i in ids]
    for path in images[:1] + masks[:1]:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found.")
    return images, masks


def _image_size(path):
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _read_mask(path, lut):
    from PIL import Image

    with Image.open(path) as img:
        mask = np.asarray(img)  # palette PNGs read as indices, never as RGB
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel (index) mask, got {mask.shape}.")
    return lut[mask] if lut is not None else mask.astype(np.uint8)


def make_dataset(dataset, data_dir, split, training, batch_size, crop_size=513,
                 min_scale=0.5, max_scale=2.0, seed=0):
    """(images float32 [0, 255], masks int32 (H, W, 1)) batches; see the module docstring."""
    import tensorflow as tf
    from PIL import Image

    warnings.warn(f"keras_deeplab.data has no {dataset} loader here; using the minimal "
                  "fallback reader in keras_deeplab.training._fallback_data.", stacklevel=3)
    if dataset == "cityscapes":
        images, masks = cityscapes_files(data_dir, split)
        lut = labelid_to_trainid_lut()
    else:
        images, masks = voc_files(data_dir, split)
        lut = None

    def load(image_path, mask_path):
        with Image.open(image_path) as img:
            image = np.asarray(img.convert("RGB"), np.float32)
        mask = _read_mask(mask_path, lut)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{image_path} is {image.shape[:2]} but {mask_path} is "
                             f"{mask.shape}.")
        return image, mask[..., None].astype(np.int32)

    order = np.arange(len(images))

    def generate():  # files are read lazily, one pair at a time
        if training:
            np.random.default_rng([seed, generate.epoch]).shuffle(order)
            generate.epoch += 1
        for i in order:
            yield load(images[i], masks[i])

    generate.epoch = 0
    same_size = len({_image_size(p) for p in images}) == 1  # header reads only
    ds = tf.data.Dataset.from_generator(
        generate,
        output_signature=(tf.TensorSpec((None, None, 3), tf.float32),
                          tf.TensorSpec((None, None, 1), tf.int32)))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(images)))
    if not training:
        return ds.batch(batch_size if same_size else 1)
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    mean = tf.constant(MEAN_RGB, tf.float32)

    def augment(image, mask):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.random.uniform((), min_scale, max_scale)
        size = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, size, method="bilinear")
        mask = tf.image.resize(mask, size, method="nearest")
        pad_h = tf.maximum(crop[0] - size[0], 0)
        pad_w = tf.maximum(crop[1] - size[1], 0)
        image = tf.pad(image - mean, [[0, pad_h], [0, pad_w], [0, 0]]) + mean
        mask = tf.pad(mask, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=255)
        stacked = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
        stacked = tf.image.random_crop(stacked, (crop[0], crop[1], 4))
        stacked = tf.image.random_flip_left_right(stacked)
        return stacked[..., :3], tf.cast(stacked[..., 3:], tf.int32)

    return (ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=len(images) >= batch_size)
            .prefetch(tf.data.AUTOTUNE))

