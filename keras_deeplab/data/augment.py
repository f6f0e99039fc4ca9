"""DeepLab augmentation, written once and run either in `tf.data` or on the accelerator.

One function, `warp_batch`, turns a batch of full-size images and masks plus a row of uniform
random numbers per example into the training crops: random scale (DeepLab's 0.5-2.0, optionally
in discrete steps), optional small rotation, pad to the crop (mean for images, the ignore label
for masks), random crop, horizontal flip, then optional photometric jitter and Gaussian blur.
It is written against a small NumPy-like namespace, so the `tf.data` path (`tf` ops, one
example at a time) and the device path (`keras.ops` on the batch, any backend) run the same
arithmetic on the same distribution of random numbers.

The crop is sampled straight from the original image: each output pixel is mapped back to
source coordinates (half-pixel centres, as `tf.image.resize`), so only the crop is ever
interpolated, never the whole rescaled image. Without rotation this reproduces
`resize(bilinear / nearest) -> pad -> crop -> flip` exactly. Masks are only ever read with
nearest neighbour, and every output pixel that falls outside the (rescaled, rotated) image is
the ignore label, so an augmented mask holds only values of the input mask and 255.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_deeplab.data.batches import unpack_batch
from keras_deeplab.utils import IGNORE_LABEL

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

# Columns of the per-example random row `u` (uniform in [0, 1)).
_SCALE, _OFFSET_Y, _OFFSET_X, _FLIP, _ROTATE = 0, 1, 2, 3, 4
_BRIGHT, _CONTRAST, _SATURATION, _HUE, _BLUR, _SIGMA = 5, 6, 7, 8, 9, 10
NUM_RANDOM = 11
# The params row a device batch carries: the random numbers, then the example's valid height
# and width (images of different sizes are padded to a common size in the batch).
NUM_PARAMS = NUM_RANDOM + 2


@dataclasses.dataclass
class AugmentConfig:
    """DeepLab training augmentation (and the optional extras from the seed reports).

    Args:
        min_scale, max_scale: float. Random scale range. Defaults to 0.5 and 2.0.
        scale_step: float or None. Draw the scale uniformly from `min_scale, min_scale + step,
            ..., max_scale` (DeepLab's 0.25 steps). Defaults to None (continuous).
        flip: bool. Random horizontal flip. Defaults to True.
        max_rotation: float. Rotate by a uniform angle in `[-max_rotation, max_rotation]`
            degrees about the image centre; corners are filled like padding. Defaults to 0.
        brightness: float. Add a uniform delta in `[-brightness, brightness] * 255`.
        contrast: float. Scale deviations from the crop's mean by `1 +- contrast`.
        saturation: float. Scale deviations from grey by `1 +- saturation`.
        hue: float. Rotate the hue by up to `hue` turns (0.5 = 180 degrees). The four
            photometric settings default to 0 (off) and touch the image only.
        blur_prob: float. Probability of a Gaussian blur. Defaults to 0 (off).
        blur_sigma: (float, float). Range of the blur's standard deviation in pixels.
        pad_value: RGB fill for images when padding. Defaults to the ImageNet mean.
        ignore_label: int. Fill for masks. Defaults to 255.
    """

    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = None
    flip: bool = True
    max_rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple = (0.1, 2.0)
    pad_value: tuple = IMAGENET_MEAN_RGB
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self):
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"Need 0 < min_scale <= max_scale; got {self.min_scale}, "
                             f"{self.max_scale}.")
        if self.scale_step is not None and self.scale_step <= 0:
            raise ValueError(f"scale_step must be positive or None; got {self.scale_step}.")
        for name in ("max_rotation", "brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
        if self.contrast >= 1 or self.saturation >= 1:
            raise ValueError("contrast and saturation must be < 1 (a factor of 1 +- value).")
        if not 0 <= self.blur_prob <= 1:
            raise ValueError(f"blur_prob must be in [0, 1]; got {self.blur_prob}.")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"blur_sigma must be (low, high) with 0 < low <= high; got "
                             f"{self.blur_sigma}.")
        if len(tuple(self.pad_value)) != 3:
            raise ValueError(f"pad_value must be an RGB triple; got {self.pad_value}.")

    @classmethod
    def coerce(cls, augment):
        """An AugmentConfig from an AugmentConfig, a dict of its fields or None."""
        if isinstance(augment, cls):
            return augment
        if augment is None:
            return cls()
        if isinstance(augment, dict):
            unknown = set(augment) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"Unknown augmentation settings {sorted(unknown)}; see "
                                 "kd.data.AugmentConfig.")
            return cls(**augment)
        raise TypeError(f"augment must be an AugmentConfig, a dict or None; got {augment!r}.")

    @property
    def photometric(self):
        return any((self.brightness, self.contrast, self.saturation, self.hue))


class _TFOps:
    """The few `keras.ops` names `warp_batch` needs, as plain TensorFlow (for `tf.data`,
    which must not depend on the Keras backend)."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def shape(self, x):
        static = x.shape.as_list()
        dynamic = self.tf.shape(x)
        return tuple(dynamic[i] if d is None else d for i, d in enumerate(static))

    def cast(self, x, dtype):
        return self.tf.cast(x, dtype)

    def arange(self, n, dtype="float32"):
        return self.tf.range(self.tf.cast(n, dtype), dtype=dtype)

    def reshape(self, x, shape):
        return self.tf.reshape(x, shape)

    def take(self, x, indices, axis=None):
        return self.tf.gather(x, indices, axis=axis)

    def clip(self, x, lo, hi):
        return self.tf.clip_by_value(x, lo, hi)

    def where(self, c, a, b):
        return self.tf.where(c, a, b)

    def floor(self, x):
        return self.tf.floor(x)

    def round(self, x):
        return self.tf.round(x)

    def cos(self, x):
        return self.tf.cos(x)

    def sin(self, x):
        return self.tf.sin(x)

    def exp(self, x):
        return self.tf.exp(x)

    def maximum(self, a, b):
        return self.tf.maximum(a, b)

    def minimum(self, a, b):
        return self.tf.minimum(a, b)

    def mean(self, x, axis=None, keepdims=False):
        return self.tf.reduce_mean(x, axis=axis, keepdims=keepdims)

    def sum(self, x, axis=None, keepdims=False):
        return self.tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    def matmul(self, a, b):
        return self.tf.linalg.matmul(a, b)

    def convert_to_tensor(self, x, dtype=None):
        return self.tf.convert_to_tensor(x, dtype=dtype)

    def logical_and(self, a, b):
        return self.tf.logical_and(a, b)

    def stack(self, xs, axis=0):
        return self.tf.stack(xs, axis=axis)

    def ones_like(self, x):
        return self.tf.ones_like(x)

    def max(self, x):
        return self.tf.reduce_max(x)

    def cond(self, pred, true_fn, false_fn):
        return self.tf.cond(pred, true_fn, false_fn)


def _scale(xp, u, cfg):
    if cfg.scale_step:
        steps = int(round((cfg.max_scale - cfg.min_scale) / cfg.scale_step)) + 1
        index = xp.minimum(xp.floor(u * steps), steps - 1)
        return cfg.min_scale + index * cfg.scale_step
    return cfg.min_scale + u * (cfg.max_scale - cfg.min_scale)


def _offset(xp, u, scaled, crop):
    """Integer crop offset, uniform over every position of the (padded) rescaled side."""
    room = xp.maximum(scaled - crop, 0.0)
    return xp.minimum(xp.floor(u * (room + 1.0)), room)


def _col(x):  # (B,) -> (B, 1, 1)
    return x[:, None, None]


def warp_batch(xp, images, masks, params, crop, cfg):
    """Augments a batch; see the module docstring.

    Args:
        xp: the ops namespace (`keras.ops`, or `_TFOps()` inside `tf.data`).
        images: (B, H, W, 3) uint8 or float, values in [0, 255].
        masks: (B, H, W, 1) integer class ids.
        params: (B, NUM_PARAMS) float32: `NUM_RANDOM` uniform numbers, then each example's
            valid height and width (the rest of a padded batch is never read).
        crop: (crop_h, crop_w) ints.
        cfg: AugmentConfig.

    Returns:
        (images float32 (B, crop_h, crop_w, 3), masks int32 (B, crop_h, crop_w, 1)).
    """
    ch, cw = crop
    batch, height, width = xp.shape(images)[:3]
    u = [params[:, i] for i in range(NUM_RANDOM)]
    src_h, src_w = params[:, NUM_RANDOM], params[:, NUM_RANDOM + 1]

    scale = _scale(xp, u[_SCALE], cfg)
    scaled_h = xp.maximum(xp.round(src_h * scale), 1.0)
    scaled_w = xp.maximum(xp.round(src_w * scale), 1.0)
    off_y = _offset(xp, u[_OFFSET_Y], scaled_h, ch)
    off_x = _offset(xp, u[_OFFSET_X], scaled_w, cw)

    rows = xp.arange(ch, dtype="float32")[None, :, None]
    cols = xp.arange(cw, dtype="float32")[None, None, :]
    if cfg.flip:
        flip = _col(xp.cast(u[_FLIP] < 0.5, "float32"))
        cols = flip * (cw - 1 - cols) + (1.0 - flip) * cols
    # Continuous positions (pixel centres) in the rescaled image.
    ys = rows + _col(off_y) + 0.5
    xs = cols + _col(off_x) + 0.5
    if cfg.max_rotation:
        angle = (2.0 * u[_ROTATE] - 1.0) * (cfg.max_rotation * math.pi / 180.0)
        cos, sin = _col(xp.cos(angle)), _col(xp.sin(angle))
        cy, cx = _col(scaled_h) / 2.0, _col(scaled_w) / 2.0
        dy, dx = ys - cy, xs - cx
        ys, xs = cy + cos * dy - sin * dx, cx + sin * dy + cos * dx
    # Back to continuous source positions: same ratio as tf.image.resize (in / out size).
    qy = ys * _col(src_h / scaled_h)
    qx = xs * _col(src_w / scaled_w)
    h1, w1 = _col(src_h), _col(src_w)
    inside = xp.logical_and(xp.logical_and(qy >= 0.0, qy < h1),
                            xp.logical_and(qx >= 0.0, qx < w1))

    flat_images = xp.reshape(images, (-1, 3))
    flat_masks = xp.reshape(masks, (-1,))
    base = _col(xp.arange(batch, dtype="int32")) * (height * width)

    def index(y, x):
        return base + xp.cast(y, "int32") * width + xp.cast(x, "int32")

    # Masks: nearest (floor of the continuous position, as resize(nearest, half-pixel)).
    my = xp.clip(xp.floor(qy), 0.0, h1 - 1.0)
    mx = xp.clip(xp.floor(qx), 0.0, w1 - 1.0)
    out_masks = xp.take(flat_masks, index(my, mx), axis=0)
    out_masks = xp.where(inside, xp.cast(out_masks, "int32"), cfg.ignore_label)

    # Images: bilinear with edge clamping (as resize(bilinear, half-pixel)).
    py, px = qy - 0.5, qx - 0.5
    y0, x0 = xp.floor(py), xp.floor(px)
    wy, wx = (py - y0)[..., None], (px - x0)[..., None]
    y0c, y1c = xp.clip(y0, 0.0, h1 - 1.0), xp.clip(y0 + 1.0, 0.0, h1 - 1.0)
    x0c, x1c = xp.clip(x0, 0.0, w1 - 1.0), xp.clip(x0 + 1.0, 0.0, w1 - 1.0)

    def read(y, x):
        return xp.cast(xp.take(flat_images, index(y, x), axis=0), "float32")

    top = read(y0c, x0c) * (1.0 - wx) + read(y0c, x1c) * wx
    bottom = read(y1c, x0c) * (1.0 - wx) + read(y1c, x1c) * wx
    out = top * (1.0 - wy) + bottom * wy

    if cfg.photometric:
        out = _photometric(xp, out, u, cfg)
    if cfg.blur_prob:
        out = _blur(xp, out, u, cfg)
    pad = xp.convert_to_tensor([float(v) for v in cfg.pad_value], dtype="float32")
    out = xp.where(inside[..., None], out, pad * xp.ones_like(out))
    return out, out_masks[..., None]


def _photometric(xp, image, u, cfg):
    def symmetric(v, amount):  # uniform in [1 - amount, 1 + amount] as (B, 1, 1, 1)
        return (1.0 + (2.0 * v - 1.0) * amount)[:, None, None, None]

    if cfg.brightness:
        image = image + (2.0 * u[_BRIGHT] - 1.0)[:, None, None, None] * (cfg.brightness * 255.0)
    if cfg.contrast:
        mean = xp.mean(image, axis=(1, 2, 3), keepdims=True)
        image = (image - mean) * symmetric(u[_CONTRAST], cfg.contrast) + mean
    if cfg.saturation:
        luma = xp.convert_to_tensor([[0.299], [0.587], [0.114]], dtype="float32")
        grey = xp.matmul(image, luma)
        image = (image - grey) * symmetric(u[_SATURATION], cfg.saturation) + grey
    if cfg.hue:
        # Hue rotation as a rotation of the chroma plane in YIQ (linear, any backend).
        theta = (2.0 * u[_HUE] - 1.0) * (cfg.hue * 2.0 * math.pi)
        image = _rotate_hue(xp, image, theta)
    return xp.clip(image, 0.0, 255.0)


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]])
# matmul(image, M.T) applies M to every pixel's RGB vector; the inverse is exact.
_RGB_TO_YIQ_T = _RGB_TO_YIQ.T.tolist()
_YIQ_TO_RGB_T = np.linalg.inv(_RGB_TO_YIQ).T.tolist()


def _rotate_hue(xp, image, theta):
    yiq = xp.matmul(image, xp.convert_to_tensor(_RGB_TO_YIQ_T, dtype="float32"))
    y, i, q = yiq[..., 0], yiq[..., 1], yiq[..., 2]
    c, s = xp.cos(theta)[:, None, None], xp.sin(theta)[:, None, None]
    rotated = xp.stack([y, c * i - s * q, s * i + c * q], axis=-1)
    return xp.matmul(rotated, xp.convert_to_tensor(_YIQ_TO_RGB_T, dtype="float32"))


def _blur(xp, image, u, cfg):
    lo, hi = cfg.blur_sigma
    radius = max(1, int(math.ceil(3.0 * hi)))
    sigma = lo + u[_SIGMA] * (hi - lo)
    apply = xp.cast(u[_BLUR] < cfg.blur_prob, "float32")
    taps = xp.arange(2 * radius + 1, dtype="float32") - float(radius)
    weights = xp.exp(-(taps[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    weights = weights / xp.sum(weights, axis=1, keepdims=True)
    delta = xp.cast(taps == 0.0, "float32")[None, :]
    weights = apply[:, None] * weights + (1.0 - apply[:, None]) * delta  # (B, taps)

    def blurred():
        return _separable(xp, image, weights, radius)

    # Skip the work when no example of the batch draws a blur (half the time at p=0.5 in
    # tf.data, where a batch is one example).
    return xp.cond(xp.max(apply) > 0.0, blurred, lambda: image)


def _separable(xp, image, weights, radius):
    for axis in (1, 2):
        size = image.shape[axis]  # the crop size: static
        # Edge-replicate once (one gather), then sum shifted slices.
        idx = xp.clip(xp.arange(size + 2 * radius, dtype="int32") - radius, 0, size - 1)
        padded = xp.take(image, idx, axis=axis)
        out = 0.0
        for k in range(2 * radius + 1):
            shifted = padded[:, k:k + size] if axis == 1 else padded[:, :, k:k + size]
            out = out + shifted * weights[:, k][:, None, None, None]
        image = out
    return image




@keras.saving.register_keras_serializable(package="keras_deeplab")
class SegmentationAugmentation(keras.layers.Layer):
    """The DeepLab augmentation as a Keras layer on whole batches (`augment_on="device"`).

    Runs `warp_batch` with `keras.ops`, so it executes on the accelerator of whichever
    backend is active (TensorFlow, JAX or PyTorch) and gives the same distribution as the
    `tf.data` path. It takes a batch as a dict `{"images", "segmentation_masks"}`, a tuple
    `(images, masks)` or the `model.fit` form `({"images", "augment_params"}, masks)` that
    `kd.data` pipelines yield with `augment_on="device"`, and returns the same form (without
    the params) holding float32 crops and int32 masks. The random numbers come from the
    batch's `augment_params` (drawn in `tf.data`, so the step itself is a pure function) or,
    when absent, from the layer's own seed generator.

    Args:
        crop_size: int or (h, w). Training crop.
        augment: `kd.data.AugmentConfig`, dict or None (DeepLab defaults).
        seed: int or None. Seed for batches that carry no params.

    Example:

    ```python
    aug = kd.data.SegmentationAugmentation(crop_size=513)
    train = kd.data.pascal_voc(root, "train_aug", crop_size=513, training=True,
                               augment_on="device", output="tuple")
    trainer = kd.training.DeviceAugmentedModel(model, aug)   # applied in its train_step
    trainer.compile(optimizer=..., loss=kd.losses.CrossEntropy())
    trainer.fit(train, epochs=...)
    ```
    """

    def __init__(self, crop_size, augment=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = ((int(crop_size),) * 2 if isinstance(crop_size, int)
                          else tuple(int(c) for c in crop_size))
        self.augment = AugmentConfig.coerce(augment)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def random_params(self, images):
        """Uniform numbers and the full image size for a batch without params."""
        ops = keras.ops
        batch, height, width = ops.shape(images)[:3]
        u = keras.random.uniform((batch, NUM_RANDOM), seed=self.seed_generator)
        size = ops.convert_to_tensor([float(height), float(width)], "float32")
        return ops.concatenate([u, ops.ones((batch, 2), "float32") * size[None]], axis=1)

    def call(self, data):
        kind, images, masks, params = _unpack(data)
        if params is None:
            params = self.random_params(images)
        # Auxiliary-head targets ({"logits": m, "aux_logits": m}, from
        # `kd.training.with_aux_targets`) are one mask under several keys: crop it once.
        targets = masks if isinstance(masks, dict) else None
        if targets is not None:
            masks = targets["logits"] if "logits" in targets else next(iter(targets.values()))
        images, masks = warp_batch(keras.ops, images, masks,
                                   keras.ops.cast(params, "float32"), self.crop_size,
                                   self.augment)
        if targets is not None:
            masks = {key: masks for key in targets}
        if kind == "dict":
            return {"images": images, "segmentation_masks": masks}
        return images, masks

    def compute_output_spec(self, data):
        kind, images, masks, _ = _unpack(data)
        b = images.shape[0]
        out_i = keras.KerasTensor((b, *self.crop_size, 3), "float32")
        out_m = keras.KerasTensor((b, *self.crop_size, 1), "int32")
        if isinstance(masks, dict):
            out_m = {key: out_m for key in masks}
        if kind == "dict":
            return {"images": out_i, "segmentation_masks": out_m}
        return out_i, out_m

    def get_config(self):
        config = super().get_config()
        config.update(crop_size=list(self.crop_size), seed=self.seed,
                      augment=dataclasses.asdict(self.augment))
        return config



def _unpack(data):
    """(kind, images, masks, params) from the batch forms SegmentationAugmentation accepts."""
    batch = unpack_batch(data)
    if batch.kind == "array" or batch.images is None or batch.masks is None or batch.rest:
        raise ValueError(
            "Expected a batch {'images', 'segmentation_masks'}, (images, masks) or "
            f"({{'images', 'augment_params'}}, masks); got {type(data).__name__}"
            + (f" with keys {sorted(data)}." if isinstance(data, dict) else "."))
    return batch.kind, batch.images, batch.masks, batch.params

