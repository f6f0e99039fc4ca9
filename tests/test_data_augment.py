"""DeepLab augmentation: tf.data path == resize/pad/crop/flip reference, device path == tf.data
path, masks keep their values, photometric and blur against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_deeplab as kd
from keras_deeplab.data import augment as A

MEAN = np.array(A.IMAGENET_MEAN_RGB, np.float32)


def params_row(height, width, **values):
    """A params row: 0.5 everywhere unless given, then the valid size."""
    names = {"scale": A._SCALE, "oy": A._OFFSET_Y, "ox": A._OFFSET_X, "flip": A._FLIP,
             "rotate": A._ROTATE, "bright": A._BRIGHT, "contrast": A._CONTRAST,
             "saturation": A._SATURATION, "hue": A._HUE, "blur": A._BLUR, "sigma": A._SIGMA}
    u = np.full(A.NUM_RANDOM, 0.5, np.float32)
    for name, v in values.items():
        u[names[name]] = v
    return np.concatenate([u, [height, width]]).astype(np.float32)


def warp_tf(images, masks, params, crop, cfg):
    out_i, out_m = A.warp_batch(A._TFOps(), tf.constant(images), tf.constant(masks),
                                tf.constant(params), crop, cfg)
    return out_i.numpy(), out_m.numpy()


def reference(image, mask, scale, oy_u, ox_u, flip, crop):
    """tf.image.resize (bilinear / nearest) -> pad (mean / 255) -> crop -> flip, in NumPy."""
    h, w = image.shape[:2]
    size = np.maximum(np.round(np.array([h, w]) * scale), 1).astype(int)
    img = tf.image.resize(image.astype(np.float32), size, "bilinear").numpy()
    msk = tf.image.resize(mask, size, "nearest").numpy()
    ph, pw = max(crop[0] - size[0], 0), max(crop[1] - size[1], 0)
    img = np.pad(img - MEAN, ((0, ph), (0, pw), (0, 0))) + MEAN
    msk = np.pad(msk, ((0, ph), (0, pw), (0, 0)), constant_values=255)
    ry, rx = max(size[0] - crop[0], 0), max(size[1] - crop[1], 0)
    oy, ox = min(int(oy_u * (ry + 1)), ry), min(int(ox_u * (rx + 1)), rx)
    img, msk = img[oy:oy + crop[0], ox:ox + crop[1]], msk[oy:oy + crop[0], ox:ox + crop[1]]
    if flip:
        img, msk = img[:, ::-1], msk[:, ::-1]
    return img, msk


@pytest.mark.parametrize("scale_u", [0.0, 0.31, 0.77, 0.999])
@pytest.mark.parametrize("flip_u", [0.2, 0.8])
def test_crop_equals_resize_pad_crop_flip(scale_u, flip_u):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 41, 3)).astype(np.uint8)
    mask = rng.integers(0, 6, (37, 41, 1)).astype(np.int32)
    crop = (33, 29)
    p = params_row(37, 41, scale=scale_u, oy=0.4, ox=0.9, flip=flip_u)
    got_i, got_m = warp_tf(image[None], mask[None], p[None], crop, A.AugmentConfig())
    want_i, want_m = reference(image, mask, 0.5 + 1.5 * scale_u, 0.4, 0.9, flip_u < 0.5, crop)
    np.testing.assert_array_equal(got_m[0], want_m)
    np.testing.assert_allclose(got_i[0], want_i, atol=1e-3)


def test_scale_steps_are_drawn_uniformly():
    cfg = A.AugmentConfig(scale_step=0.25)
    u = np.linspace(0, 1, 7000, endpoint=False).astype(np.float32)
    scales = np.asarray(A._scale(np, u, cfg))
    values, counts = np.unique(np.round(scales, 6), return_counts=True)
    np.testing.assert_allclose(values, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    assert counts.min() == counts.max() == 1000


def test_crop_offsets_cover_every_position_uniformly():
    # Scale fixed at 1; the image encodes coordinates, so the crop's corner is its offset.
    yy, xx = np.mgrid[0:20, 0:30]
    image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)[None]
    mask = np.zeros((1, 20, 30, 1), np.int32)
    cfg = A.AugmentConfig(min_scale=1.0, max_scale=1.0, flip=False)
    ds = kd.data.make_pipeline(kd.data.ArraySource(np.repeat(image, 8, 0),
                                                   np.repeat(mask, 8, 0), 2),
                               batch_size=8, training=True, crop_size=(16, 25), augment=cfg)
    corners = np.concatenate([b["images"].numpy()[:, 0, 0, :2] for _ in range(60) for b in ds])
    counts = np.zeros((5, 6))
    np.add.at(counts, (corners[:, 0].astype(int), corners[:, 1].astype(int)), 1)
    assert counts.min() > 0  # all 5 x 6 offsets occur
    assert counts.max() < 3 * counts.mean()


def _blocky(n=6, h=37, w=41, values=(0, 2, 5), seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.choice(values, size=(n, h // 8 + 1, w // 8 + 1))
    return np.kron(cells, np.ones((8, 8), int))[:, :h, :w, None].astype("int32")


FULL = dict(min_scale=0.5, max_scale=2.0, scale_step=0.25, max_rotation=20, brightness=0.2,
            contrast=0.3, saturation=0.4, hue=0.1, blur_prob=0.5)


@pytest.mark.parametrize("augment_on", ["data", "device"])
def test_masks_hold_only_their_values_or_ignore(augment_on):
    masks = _blocky()
    images = np.repeat(masks * 40, 3, axis=-1).astype("uint8")
    source = kd.data.ArraySource(images, masks, num_classes=6)
    ds = kd.data.make_pipeline(source, batch_size=3, training=True, crop_size=(45, 29),
                               augment=FULL, augment_on=augment_on)
    layer = kd.data.SegmentationAugmentation((45, 29), FULL)
    seen = set()
    for _ in range(4):
        for batch in ds:
            if augment_on == "device":
                assert batch["images"].shape == (3, 37, 41, 3)
                batch = layer(batch)
            m = np.asarray(batch["segmentation_masks"])
            im = np.asarray(batch["images"])
            assert m.shape == (3, 45, 29, 1) and m.dtype == np.int32
            assert im.dtype == np.float32 and im.min() >= 0 and im.max() <= 255
            seen |= set(np.unique(m))
    assert seen <= {0, 2, 5, 255} and {0, 2, 5, 255} <= seen


def test_image_and_mask_stay_aligned_under_rotation():
    masks = _blocky(values=(0, 2, 5))
    images = np.repeat(masks * 40, 3, axis=-1).astype("uint8")
    cfg = A.AugmentConfig(max_rotation=30, pad_value=(255.0, 255.0, 255.0))
    rng = np.random.default_rng(3)
    p = np.stack([np.concatenate([rng.uniform(size=A.NUM_RANDOM), [37, 41]])
                  for _ in range(6)]).astype(np.float32)
    im, m = warp_tf(images, masks, p, (33, 33), cfg)
    inside = m[..., 0] != 255
    assert inside.mean() > 0.3
    np.testing.assert_array_equal(im[..., 0][~inside], 255.0)  # fill where the mask is ignore
    agree = np.isclose(im[..., 0][inside], m[..., 0][inside] * 40.0, atol=1.0)
    assert agree.mean() > 0.75  # bilinear blurs block edges (4 px blocks at scale 0.5)


def test_rotation_matches_an_affine_transform_reference():
    # An independent implementation: keras.ops.image.affine_transform (nearest) on the mask.
    masks = _blocky(n=1, h=32, w=32, values=(1, 2, 3, 4))
    cfg = A.AugmentConfig(min_scale=1.0, max_scale=1.0, flip=False, max_rotation=25)
    p = params_row(32, 32, rotate=1.0)  # +25 degrees
    _, got = warp_tf(np.zeros((1, 32, 32, 3), np.uint8), masks, p[None], (32, 32), cfg)
    a = np.deg2rad(25.0)
    c, s = np.cos(a), np.sin(a)
    # input (x, y) = R (output + 0.5 - centre) + centre - 0.5, for (x, y) = (col, row)
    cx = cy = 16.0
    a0, a1 = c, s
    b0, b1 = -s, c
    a2 = cx - 0.5 + c * (0.5 - cx) + s * (0.5 - cy)
    b2 = cy - 0.5 - s * (0.5 - cx) + c * (0.5 - cy)
    transform = np.array([[a0, a1, a2, b0, b1, b2, 0, 0]], np.float32)
    want = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        (masks + 1).astype("float32"), transform, interpolation="nearest", fill_mode="constant",
        fill_value=0))
    want = np.where(want == 0, 255, want - 1).astype(int)
    assert (got == want).mean() > 0.97  # differs only where a sample lands on a pixel edge
    assert got[0, 0, 0, 0] == 255 and got[0, 16, 16, 0] == masks[0, 16, 16, 0]


def test_device_layer_equals_tf_data_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 37, 41, 3)).astype(np.uint8)
    masks = rng.integers(0, 6, (3, 37, 41, 1)).astype(np.int32)
    # rows 2 and 3 are smaller images padded into the batch: the padding is never read
    p = np.concatenate([rng.uniform(size=(3, A.NUM_RANDOM)), [[37, 41], [30, 41], [37, 20]]], 1)
    p = p.astype(np.float32)
    want_i, want_m = warp_tf(images, masks, p, (33, 29), A.AugmentConfig(**FULL))
    layer = kd.data.SegmentationAugmentation((33, 29), FULL)
    got_i, got_m = layer((({"images": images, "augment_params": p}), masks))
    np.testing.assert_allclose(np.asarray(got_i), want_i, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(got_m), want_m)
    # the padded rows read only their valid part: changing the padding changes nothing
    images[1, 30:] = 0
    images[2, :, 20:] = 0
    again_i, _ = warp_tf(images, masks, p, (33, 29), A.AugmentConfig(**FULL))
    np.testing.assert_allclose(again_i, want_i, atol=1e-3)


def test_device_and_data_paths_give_the_same_distribution():
    masks = _blocky(n=8, seed=1)
    images = np.repeat(masks * 40, 3, axis=-1).astype("uint8")
    source = kd.data.ArraySource(images, masks, num_classes=6)
    stats = {}
    for on in ("data", "device"):
        ds = kd.data.make_pipeline(source, batch_size=8, training=True, crop_size=41,
                                   augment_on=on, repeat=True)
        layer = kd.data.SegmentationAugmentation(41)
        fractions = []
        for batch, _ in zip(ds, range(40)):
            batch = layer(batch) if on == "device" else batch
            fractions.extend((np.asarray(batch["segmentation_masks"]) == 255).mean(axis=(1, 2, 3)))
        stats[on] = np.array(fractions)
    diff = abs(stats["data"].mean() - stats["device"].mean())
    stderr = np.sqrt(stats["data"].var() / 320 + stats["device"].var() / 320)
    assert diff < 4 * stderr, (stats["data"].mean(), stats["device"].mean())


def test_photometric_jitter_against_numpy():
    rng = np.random.default_rng(2)
    image = rng.uniform(60, 190, (1, 16, 16, 3)).astype(np.float32)
    grey = np.repeat(image[..., :1], 3, -1)
    mask = np.zeros((1, 16, 16, 1), np.int32)
    base = dict(min_scale=1.0, max_scale=1.0, flip=False)

    def run(img, cfg, **u):
        return warp_tf(img, mask, params_row(16, 16, **u)[None], (16, 16),
                       A.AugmentConfig(**base, **cfg))[0]

    out = run(image, {"brightness": 0.1}, bright=1.0)
    np.testing.assert_allclose(out, image + 25.5, atol=1e-3)
    out = run(image, {"contrast": 0.5}, contrast=0.0)  # factor 0.5 about the crop mean
    np.testing.assert_allclose(out, (image - image.mean()) * 0.5 + image.mean(), atol=1e-3)
    lum = image @ np.array([0.299, 0.587, 0.114], np.float32)
    out = run(image, {"saturation": 0.5}, saturation=1.0)  # factor 1.5 away from grey
    np.testing.assert_allclose(out, np.clip((image - lum[..., None]) * 1.5 + lum[..., None],
                                            0, 255), atol=1e-3)
    np.testing.assert_allclose(run(grey, {"hue": 0.5}, hue=0.9), grey, atol=0.05)  # grey stays
    np.testing.assert_allclose(run(image, {"hue": 0.3}, hue=0.5), image, atol=0.05)  # 0 turns
    # a half turn of hue keeps luma (Y of YIQ) and moves the colours
    turned = run(image, {"hue": 0.5}, hue=0.0)
    y_turned = turned @ np.array([0.299, 0.587, 0.114], np.float32)
    inside = (turned > 0.5).all(-1) & (turned < 254.5).all(-1)
    np.testing.assert_allclose(y_turned[inside], lum[inside], atol=0.05)
    assert np.abs(turned - image).max() > 10


def test_gaussian_blur_against_numpy():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 255, (1, 12, 14, 3)).astype(np.float32)
    mask = np.zeros((1, 12, 14, 1), np.int32)
    cfg = A.AugmentConfig(min_scale=1.0, max_scale=1.0, flip=False, blur_prob=0.5,
                          blur_sigma=(0.5, 1.5))
    got = warp_tf(image, mask, params_row(12, 14, blur=0.0, sigma=0.5)[None], (12, 14), cfg)[0]
    sigma, radius = 1.0, 5  # sigma = 0.5 + 0.5 * (1.5 - 0.5); radius = ceil(3 * 1.5)
    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    want = image[0]
    for axis in (0, 1):
        padded = np.pad(want, [(radius, radius) if a == axis else (0, 0) for a in range(3)],
                        mode="edge")
        want = sum(k[i] * np.take(padded, np.arange(i, i + want.shape[axis]), axis=axis)
                   for i in range(2 * radius + 1))
    np.testing.assert_allclose(got[0], want, atol=1e-3)
    # not drawn (u >= blur_prob): untouched
    same = warp_tf(image, mask, params_row(12, 14, blur=0.9)[None], (12, 14), cfg)[0]
    np.testing.assert_allclose(same, image, atol=1e-3)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="min_scale"):
        A.AugmentConfig(min_scale=2.0, max_scale=1.0)
    with pytest.raises(ValueError, match="Unknown augmentation settings"):
        A.AugmentConfig.coerce({"max_scale": 2.0, "rotate": 10})
    with pytest.raises(ValueError, match="blur_prob"):
        A.AugmentConfig(blur_prob=2)
    with pytest.raises(ValueError, match="augment_on"):
        kd.data.synthetic("train", num_images=8, image_size=32, augment_on="gpu")


def test_fit_with_augmentation_on_device():
    ds = kd.data.synthetic("train", num_images=16, image_size=48, batch_size=4, crop_size=40,
                           output="tuple", augment_on="device")
    x, y = next(iter(ds))
    assert x["images"].dtype == tf.uint8 and x["images"].shape == (4, 48, 48, 3)
    assert x["augment_params"].shape == (4, A.NUM_PARAMS) and y.shape == (4, 48, 48, 1)
    model = kd.models.PixelClassifier(num_classes=6)
    model.compile(optimizer="adam", loss=kd.losses.CrossEntropy())
    with pytest.raises(ValueError, match="DeviceAugmentedModel"):  # not silently un-augmented
        model.fit(ds, epochs=1, verbose=0)
    weights_before = [w.path for w in model.weights]
    trainer = kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation(40))
    trainer.compile(optimizer="adam", loss=kd.losses.CrossEntropy())
    losses = trainer.fit(ds, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert [w.path for w in model.weights] == weights_before  # nothing extra to save
    assert trainer.trainable_weights == model.trainable_weights
    # evaluation and prediction take plain images, and give the wrapped model's output
    x = np.random.default_rng(0).uniform(0, 255, (1, 48, 48, 3)).astype("float32")
    np.testing.assert_array_equal(trainer.predict(x, verbose=0), model.predict(x, verbose=0))


def test_layer_config_round_trip():
    layer = kd.data.SegmentationAugmentation((65, 33), {"max_rotation": 5, "hue": 0.1}, seed=3)
    clone = kd.data.SegmentationAugmentation.from_config(layer.get_config())
    assert clone.crop_size == (65, 33) and clone.augment == layer.augment and clone.seed == 3
    # without params it draws its own, at the full image size
    out_i, out_m = clone((np.zeros((2, 50, 40, 3), "uint8"), np.ones((2, 50, 40, 1), "int32")))
    assert out_i.shape == (2, 65, 33, 3) and set(np.unique(np.asarray(out_m))) <= {1, 255}


def test_device_augmentation_with_aux_head_targets():
    ds = kd.data.synthetic("train", num_images=8, image_size=48, batch_size=4, crop_size=40,
                           output="tuple", augment_on="device")
    model = kd.models.from_preset("deeplabv3plus_tiny", num_classes=6, aux_head=True)
    loss, weights = kd.training.aux_loss(kd.losses.CrossEntropy(), aux_weight=0.4)
    trainer = kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation(40))
    trainer.compile(optimizer="adam", loss=loss, loss_weights=weights)
    x, y = next(iter(kd.training.with_aux_targets(ds)))
    _, cropped = trainer.augment((x, y))
    assert set(cropped) == {"logits", "aux_logits"} and cropped["logits"].shape == (4, 40, 40, 1)
    losses = trainer.fit(kd.training.with_aux_targets(ds), epochs=1, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
