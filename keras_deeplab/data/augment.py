"""DeepLab training augmentation for single examples in `tf.data`.

Random scale (0.5-2.0, optionally in 0.25 steps), pad to the crop size (images with the mean,
masks with the ignore label 255), random crop, horizontal flip. Images are resized bilinearly,
masks only ever with nearest neighbour, so an augmented mask only holds values of the original
mask plus 255.
"""

from __future__ import annotations

import tensorflow as tf

IGNORE_LABEL = 255
IMAGE_MEAN = (123.675, 116.28, 103.53)


def augment_example(example, seed, crop_size, min_scale=0.5, max_scale=2.0, scale_step=None,
                    flip=True, ignore_label=IGNORE_LABEL, mean=IMAGE_MEAN):
    """Augments one `{"images", "segmentation_masks"}` example (DeepLab recipe).

    Args:
        example: dict with float32 `images` (H, W, 3) and int32 `segmentation_masks` (H, W, 1).
        seed: int32 tensor of shape (2,), stateless seed.
        crop_size: int or (h, w). Output size.
        min_scale: float. Defaults to 0.5.
        max_scale: float. Defaults to 2.0.
        scale_step: float or None. Quantise the scale (e.g. 0.25). Defaults to None.
        flip: bool. Random horizontal flip. Defaults to True.
        ignore_label: int. Mask fill. Defaults to 255.
        mean: 3 floats. Image fill. Defaults to the ImageNet mean.

    Returns:
        dict with float32 images (h, w, 3) and int32 masks (h, w, 1).
    """
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image = tf.convert_to_tensor(example["images"], tf.float32)
    mask = tf.convert_to_tensor(example["segmentation_masks"], tf.int32)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    if scale_step:
        steps = int(round((max_scale - min_scale) / scale_step)) + 1
        k = tf.random.stateless_uniform([], seeds[0], 0, steps, tf.int32)
        scale = min_scale + tf.cast(k, tf.float32) * scale_step
    else:
        scale = tf.random.stateless_uniform([], seeds[0], min_scale, max_scale)
    nh = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
    nw = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, [nh, nw], method="bilinear")
    mask = tf.image.resize(mask, [nh, nw], method="nearest")
    mean_t = tf.constant(mean, tf.float32)
    ph, pw = tf.maximum(ch - nh, 0), tf.maximum(cw - nw, 0)
    image = tf.pad(image - mean_t, [[0, ph], [0, pw], [0, 0]]) + mean_t
    mask = tf.pad(mask - ignore_label, [[0, ph], [0, pw], [0, 0]]) + ignore_label
    th, tw = nh + ph, nw + pw
    oy = tf.random.stateless_uniform([], seeds[1], 0, th - ch + 1, tf.int32)
    ox = tf.random.stateless_uniform([], seeds[2], 0, tw - cw + 1, tf.int32)
    image = image[oy:oy + ch, ox:ox + cw]
    mask = mask[oy:oy + ch, ox:ox + cw]
    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        image = tf.cond(do_flip, lambda: image[:, ::-1], lambda: image)
        mask = tf.cond(do_flip, lambda: mask[:, ::-1], lambda: mask)
    image = tf.ensure_shape(image, [ch, cw, 3])
    mask = tf.ensure_shape(mask, [ch, cw, 1])
    return {"images": image, "segmentation_masks": mask}
