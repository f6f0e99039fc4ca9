"""Synthetic segmentation dataset: the embedded default for the demo and the tests.

Every image is drawn from a seeded NumPy generator (vectorised over chunks of images, so
2,000 images of 128x128 take a couple of seconds), and the same `(seed, split, index)` always gives
the same image, whatever `num_images` is.

What is in an image:

* a **textured background** (class 0): a smooth low-frequency blend of two colours;
* 3 to 7 **objects** (ellipses, rounded rectangles and diamonds, rotated) whose semi-axes are
  drawn log-uniformly between 5% and 40% of the image side (an 8x range of scales), painted
  largest first so that they **occlude** one another;
* the **class of an object is its texture**, never its colour: horizontal stripes, vertical
  stripes, a checkerboard, dots, a grid of thin lines (and, for `num_classes` 7 and 8, diagonal
  and anti-diagonal stripes). Each object is painted with two colours drawn from a per-image random
  palette that every class, background included, shares. A smooth illumination field and Gaussian
  pixel noise are added on top.

So a pixel's own colour says almost nothing about its class: a classifier has to look at a
neighbourhood (texture period 5-9 px, orientation, dot/line/checker structure) and at object
boundaries. How hard it is (6 classes, seed 0):

* `tests/test_data_synthetic.py::test_per_pixel_colour_classifiers_score_low_miou` fits two
  colour-only classifiers with NumPy on 60,000 pixels of 128 training images of 64x64 (softmax
  regression on RGB plus its squares and cross terms; nearest class mean on RGB) and checks on
  32 `split="val"` images that both score at most 0.25 mIoU, and that predicting background
  everywhere scores at most 0.15.
* a model with context has to beat these by a wide margin; the demo (`make demo`) reports what
  DeepLabV3+, an FCN and a trained 1x1-convolution (per-pixel) baseline reach on 128x128
  images, next to the background-everywhere score of its test images (`metrics.json`).

Example:

```python
import keras_deeplab as kd
images, masks = kd.data.synthetic_arrays(split="train", num_images=64, image_size=128)
# images: uint8 (64, 128, 128, 3); masks: int32 (64, 128, 128, 1) with values 0..5
train = kd.data.synthetic(split="train", num_images=2000, image_size=128, batch_size=16,
                          training=True, crop_size=128)
kd.data.write_synthetic("/tmp/synth", num_images=100)   # custom-folder layout, see `folder`
```
"""

from __future__ import annotations

import os

import numpy as np

from keras_deeplab.data import pipeline as _pipeline

CLASS_NAMES = (
    "background",
    "horizontal_stripes",
    "vertical_stripes",
    "checker",
    "dots",
    "grid",
    "diagonal_stripes",
    "antidiagonal_stripes",
)
MAX_CLASSES = len(CLASS_NAMES)
_SPLITS = {"train": 0, "val": 1, "test": 2}
_DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 200}
_CHUNK = 64  # images generated per vectorised step; fixed so an image never depends on num_images
_MIN_OBJECTS, _MAX_OBJECTS = 3, 7
_MIN_SCALE, _MAX_SCALE = 0.05, 0.40  # semi-axis as a fraction of the image side
_STRIPE_ANGLES = {1: 0.0, 2: 90.0, 6: 45.0, 7: 135.0}


def _check_args(split, num_classes, image_size):
    if split not in _SPLITS:
        raise ValueError(f"Unknown synthetic split {split!r}; use one of {sorted(_SPLITS)}.")
    if not 2 <= int(num_classes) <= MAX_CLASSES:
        raise ValueError(
            f"The synthetic dataset supports 2 to {MAX_CLASSES} classes (background + one texture "
            f"per class: {', '.join(CLASS_NAMES)}); got num_classes={num_classes}."
        )
    if int(image_size) < 32:
        raise ValueError(f"image_size must be at least 32 pixels; got {image_size}.")


def _pattern(cls, yy, xx, rng, n):
    """Binary texture (n, S, S) for `n` objects of texture class `cls`."""
    phase_u = rng.uniform(0, 1, (n, 1, 1))
    phase_v = rng.uniform(0, 1, (n, 1, 1))
    if cls in _STRIPE_ANGLES:
        angle = np.deg2rad(_STRIPE_ANGLES[cls] + rng.uniform(-12, 12, (n, 1, 1)))
        period = rng.uniform(5.0, 8.0, (n, 1, 1))
        # distance along the stripe normal; stripes run along `angle`
        coord = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
        return ((coord + phase_u).astype(np.float32) % 1.0) < 0.5
    angle = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
    phase_u, phase_v = phase_u.astype(np.float32), phase_v.astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if cls == 3:  # checker
        cell = rng.uniform(3.0, 5.0, (n, 1, 1))
        return ((np.floor(u / cell + phase_u) + np.floor(v / cell + phase_v)) % 2) == 1
    spacing = rng.uniform(6.0, 9.0, (n, 1, 1))
    fu = (u / spacing + phase_u) % 1.0
    fv = (v / spacing + phase_v) % 1.0
    if cls == 4:  # dots
        return (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.3**2
    if cls == 5:  # grid of thin lines
        width = 2.0 / spacing
        return (fu < width) | (fv < width)
    raise ValueError(f"no texture for class {cls}")


def _smooth_field(rng, n, yy, xx, size, waves=3):
    """Smooth random field in [0, 1] of shape (n, S, S) made of a few low-frequency waves."""
    field = np.zeros((n,) + yy.shape[1:], np.float32)
    for _ in range(waves):
        theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
        wavelength = (rng.uniform(0.5, 2.0, (n, 1, 1)) * size).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
        field += np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / wavelength + phase)
    return 0.5 + 0.5 * field / waves


def _generate_chunk(rng, n, size, num_classes):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = yy[None], xx[None]
    palette = rng.uniform(0, 255, (n, 8, 3)).astype(np.float32)
    rows = np.arange(n)

    def two_colours():
        i = rng.integers(0, 8, n)
        j = (i + rng.integers(1, 8, n)) % 8
        a, b = palette[rows, i], palette[rows, j]
        # keep the two colours of one texture apart, so the texture stays visible
        close = np.linalg.norm(a - b, axis=-1) < 80
        b = np.where(close[:, None], (a + 128.0) % 256.0, b)
        return a[:, None, None, :], b[:, None, None, :]

    c0, c1 = two_colours()
    t = _smooth_field(rng, n, yy, xx, size)[..., None]
    image = (c0 * (1 - t) + c1 * t).astype(np.float32)
    mask = np.zeros((n, size, size), np.uint8)

    num_objects = rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1, n)
    log_scale = rng.uniform(np.log(_MIN_SCALE), np.log(_MAX_SCALE), (n, _MAX_OBJECTS))
    scales = -np.sort(-np.exp(log_scale), axis=1) * size  # largest first: small ones stay on top
    for k in range(_MAX_OBJECTS):
        active = k < num_objects
        cls = rng.integers(1, num_classes, n)
        cy = rng.uniform(0, size, (n, 1, 1))
        cx = rng.uniform(0, size, (n, 1, 1))
        a = scales[:, k].reshape(n, 1, 1)
        b = a * rng.uniform(0.5, 1.0, (n, 1, 1))
        theta = rng.uniform(0, np.pi, (n, 1, 1))
        shape = rng.integers(0, 3, n)  # diamond, ellipse, rounded rectangle
        du, dv = xx - cx.astype(np.float32), yy - cy.astype(np.float32)
        cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        ru = np.abs(du * cos + dv * sin) / a.astype(np.float32)
        rv = np.abs(dv * cos - du * sin) / b.astype(np.float32)
        inside = np.zeros((n, size, size), bool)
        for kind, fn in enumerate((lambda p, q: p + q, lambda p, q: p * p + q * q,
                                   lambda p, q: (p * p) ** 3 + (q * q) ** 3)):
            sel = np.nonzero((shape == kind) & active)[0]
            if sel.size:
                inside[sel] = fn(ru[sel], rv[sel]) <= 1.0
        pattern = np.zeros((n, size, size), bool)
        for c in range(1, num_classes):
            sel = np.nonzero(cls == c)[0]
            if sel.size:
                pattern[sel] = _pattern(c, yy, xx, rng, sel.size)
        ca, cb = two_colours()
        texture = np.where(pattern[..., None], ca, cb)
        np.copyto(image, texture, where=inside[..., None])
        np.copyto(mask, cls[:, None, None].astype(np.uint8), where=inside)

    shading = 0.8 + 0.4 * _smooth_field(rng, n, yy, xx, size, waves=2)[..., None]
    image = image * shading + rng.standard_normal(image.shape, np.float32) * 6.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def synthetic_arrays(split="train", num_images=None, image_size=128, num_classes=6, seed=0,
                     progress=False):
    """Generates the synthetic dataset as NumPy arrays.

    Args:
        split: str. `"train"`, `"val"` or `"test"`; each split has its own random stream.
            Defaults to `"train"`.
        num_images: int or None. Number of images. Defaults to 2000 for train, 200 otherwise.
        image_size: int. Side of the square images in pixels. Defaults to 128.
        num_classes: int. 2 to 8 classes including background 0. Defaults to 6.
        seed: int. Seed; the same seed, split and index always give the same image.
            Defaults to 0.
        progress: bool. Show a tqdm progress bar. Defaults to False.

    Returns:
        `(images, masks)`: uint8 `(N, S, S, 3)` RGB images and int32 `(N, S, S, 1)` masks.

    Example:

    ```python
    images, masks = kd.data.synthetic_arrays("val", num_images=8, image_size=64)
    ```
    """
    _check_args(split, num_classes, image_size)
    if num_images is None:
        num_images = _DEFAULT_SIZES[split]
    num_images, size = int(num_images), int(image_size)
    if num_images < 1:
        raise ValueError(f"num_images must be positive; got {num_images}.")
    images = np.empty((num_images, size, size, 3), np.uint8)
    masks = np.empty((num_images, size, size, 1), np.int32)
    chunks = range(0, num_images, _CHUNK)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"synthetic {split}", unit="chunk")
    for start in chunks:
        rng = np.random.default_rng([int(seed), _SPLITS[split], int(num_classes), size,
                                     start // _CHUNK])
        img, msk = _generate_chunk(rng, _CHUNK, size, int(num_classes))
        stop = min(start + _CHUNK, num_images)
        images[start:stop] = img[: stop - start]
        masks[start:stop, ..., 0] = msk[: stop - start]
    return images, masks


def synthetic(split="train", num_images=None, image_size=128, num_classes=6, seed=0,
              batch_size=8, training=None, crop_size=None, output="dict", augment=None,
              augment_on="data", shuffle=None, shuffle_seed=None, deterministic=True,
              repeat=False, drop_remainder=None, cache=True, prefetch=True, augment_seed=None):
    """The synthetic dataset as a batched `tf.data.Dataset`.

    Yields `{"images": float32 (B, S, S, 3) in [0, 255], "segmentation_masks": int32
    (B, S, S, 1)}` (or `(images, masks)` with `output="tuple"`). In training mode the DeepLab
    augmentation (random scale, pad, crop, flip) runs on it; see `kd.data.AugmentConfig`.

    Args:
        split: str. `"train"`, `"val"` or `"test"`. Defaults to `"train"`.
        num_images: int or None. Defaults to 2000 for train, 200 otherwise.
        image_size: int. Image side. Defaults to 128.
        num_classes: int. Classes including background. Defaults to 6.
        seed: int. Generation seed. Defaults to 0.
        batch_size: int. Defaults to 8.
        training: bool or None. Augment and shuffle; defaults to `split == "train"`.
        crop_size: int, tuple or None. Training crop; defaults to `image_size`.
        output: str. `"dict"` or `"tuple"`. Defaults to `"dict"`.
        augment: `kd.data.AugmentConfig`, dict or None. Augmentation settings (crop_size is
            taken from `crop_size`). Defaults to the DeepLab recipe.
        augment_on: str. `"data"` (in `tf.data` on the CPU) or `"device"` (the dataset yields
            un-augmented batches; see `kd.data.make_pipeline`).
        shuffle, shuffle_seed, deterministic, repeat, drop_remainder, cache, prefetch,
            augment_seed: see `kd.data.make_pipeline`.

    Example:

    ```python
    ds = kd.data.synthetic("train", num_images=256, image_size=64, batch_size=8, output="tuple")
    model.fit(ds, epochs=2)
    ```
    """
    images, masks = synthetic_arrays(split, num_images, image_size, num_classes, seed)
    if training is None:
        training = split == "train"
    source = _pipeline.ArraySource(images, masks, num_classes=num_classes,
                                   name=f"synthetic/{split}")
    return _pipeline.make_pipeline(
        source, batch_size=batch_size, training=training, crop_size=crop_size or image_size,
        output=output, augment=augment, augment_on=augment_on, shuffle=shuffle,
        shuffle_seed=seed if shuffle_seed is None else shuffle_seed,
        deterministic=deterministic, repeat=repeat, drop_remainder=drop_remainder, cache=cache,
        prefetch=prefetch, augment_seed=augment_seed)


def write_synthetic(root, splits=("train", "val"), num_images=None, image_size=128,
                    num_classes=6, seed=0, progress=True):
    """Writes the synthetic dataset to disk in the custom-folder layout.

    Layout: `root/<split>/images/00000.png` (RGB) and `root/<split>/masks/00000.png`
    (8-bit class indices), plus `root/classes.txt` with one class name per line. Read it back
    with `kd.data.folder(f"{root}/train/images", f"{root}/train/masks", num_classes)`.

    Args:
        root: str. Output folder (created).
        splits: tuple of str. Splits to write. Defaults to `("train", "val")`.
        num_images: int, dict or None. Images per split (a dict maps split to count).
            Defaults to 2000 for train, 200 otherwise.
        image_size: int. Defaults to 128.
        num_classes: int. Defaults to 6.
        seed: int. Defaults to 0.
        progress: bool. Show tqdm progress bars. Defaults to True.

    Returns:
        dict mapping split to `(images_dir, masks_dir)`.

    Example:

    ```python
    dirs = kd.data.write_synthetic("/tmp/synth", num_images={"train": 500, "val": 50})
    train = kd.data.folder(*dirs["train"], num_classes=6, training=True, crop_size=128)
    ```
    """
    from PIL import Image

    if isinstance(splits, str):
        splits = (splits,)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES[:num_classes]) + "\n")
    result = {}
    for split in splits:
        count = num_images.get(split) if isinstance(num_images, dict) else num_images
        images, masks = synthetic_arrays(split, count, image_size, num_classes, seed)
        image_dir = os.path.join(root, split, "images")
        mask_dir = os.path.join(root, split, "masks")
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(mask_dir, exist_ok=True)
        indices = range(len(images))
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"writing synthetic {split}", unit="img")
        for i in indices:
            Image.fromarray(images[i]).save(os.path.join(image_dir, f"{i:05d}.png"))
            Image.fromarray(masks[i, ..., 0].astype(np.uint8)).save(
                os.path.join(mask_dir, f"{i:05d}.png"))
        result[split] = (image_dir, mask_dir)
    return result
