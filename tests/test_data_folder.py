"""Tests for kd.data.folder: stem matching, value maps, conversions and bad-input errors."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_deeplab as kd


def _tree(tmp_path, n=3, size=(20, 24), mask_values=(0, 1, 2)):
    rng = np.random.default_rng(0)
    img_dir, msk_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir()
    msk_dir.mkdir()
    images, masks = [], []
    for i in range(n):
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        mask = rng.choice(np.array(mask_values, np.uint8), size)
        Image.fromarray(image).save(img_dir / f"img{i}.png")
        Image.fromarray(mask).save(msk_dir / f"img{i}.png")
        images.append(image)
        masks.append(mask)
    return str(img_dir), str(msk_dir), np.stack(images), np.stack(masks)


def test_reads_pairs_in_stem_order_at_full_resolution(tmp_path):
    img_dir, msk_dir, images, masks = _tree(tmp_path)
    ds = kd.data.folder(img_dir, msk_dir, num_classes=3, batch_size=3)
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["images"].numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(batch["segmentation_masks"].numpy()[..., 0], masks)
    assert batch["segmentation_masks"].dtype == tf.int32


def test_value_map_and_invalid_to_ignore(tmp_path):
    img_dir, msk_dir, _, masks = _tree(tmp_path, mask_values=(0, 128, 7))
    ds = kd.data.folder(img_dir, msk_dir, num_classes=2, value_map={0: 0, 128: 1},
                        batch_size=3, output="tuple")
    _, got = next(iter(ds))
    expected = np.where(masks == 0, 0, np.where(masks == 128, 1, 255))
    np.testing.assert_array_equal(got.numpy()[..., 0], expected)
    with pytest.raises(tf.errors.InvalidArgumentError, match="img0.png holds values"):
        list(kd.data.folder(img_dir, msk_dir, num_classes=2, batch_size=3))
    ds = kd.data.folder(img_dir, msk_dir, num_classes=2, invalid_to_ignore=True, batch_size=3)
    got = next(iter(ds))["segmentation_masks"].numpy()[..., 0]
    np.testing.assert_array_equal(got, np.where(masks == 0, 0, 255))


def test_grayscale_and_rgba_images_are_converted(tmp_path):
    img_dir, msk_dir, images, _ = _tree(tmp_path, n=2)
    Image.fromarray(images[0][..., 0]).save(f"{img_dir}/img0.png")  # grayscale
    rgba = np.concatenate([images[1], np.full(images[1].shape[:2] + (1,), 9, np.uint8)], -1)
    Image.fromarray(rgba).save(f"{img_dir}/img1.png")
    got = next(iter(kd.data.folder(img_dir, msk_dir, num_classes=3, batch_size=2)))["images"]
    np.testing.assert_array_equal(got.numpy()[0], np.repeat(images[0][..., :1], 3, -1))
    np.testing.assert_array_equal(got.numpy()[1], images[1])


def test_listing_errors_name_the_file(tmp_path):
    img_dir, msk_dir, _, _ = _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kd.data.folder(str(tmp_path / "nope"), msk_dir, num_classes=3)
    (tmp_path / "images" / "extra.png").write_bytes(open(f"{img_dir}/img0.png", "rb").read())
    with pytest.raises(ValueError, match="extra.png"):
        kd.data.folder(img_dir, msk_dir, num_classes=3)
    (tmp_path / "images" / "extra.png").unlink()
    (tmp_path / "masks" / "orphan.png").write_bytes(open(f"{msk_dir}/img0.png", "rb").read())
    with pytest.raises(ValueError, match="orphan.png"):
        kd.data.folder(img_dir, msk_dir, num_classes=3)


def test_decode_errors_name_the_file(tmp_path):
    img_dir, msk_dir, images, masks = _tree(tmp_path)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(f"{msk_dir}/img1.png")  # RGB mask
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"img1.png is a colour \(RGB\) image.*single-channel"):
        list(kd.data.folder(img_dir, msk_dir, num_classes=3, batch_size=1))
    Image.fromarray(masks[1][:10]).save(f"{msk_dir}/img1.png")  # size mismatch
    with pytest.raises(tf.errors.InvalidArgumentError, match="size mismatch.*img1.png"):
        list(kd.data.folder(img_dir, msk_dir, num_classes=3, batch_size=1))
    Image.fromarray(masks[1]).save(f"{msk_dir}/img1.png")
    data = open(f"{img_dir}/img2.png", "rb").read()
    open(f"{img_dir}/img2.png", "wb").write(data[: len(data) // 2])  # truncated
    with pytest.raises(tf.errors.InvalidArgumentError, match="img2.png.*truncated"):
        list(kd.data.folder(img_dir, msk_dir, num_classes=3, batch_size=1))


def test_write_synthetic_reads_back_through_folder(tmp_path):
    dirs = kd.data.write_synthetic(str(tmp_path), splits=("val",), num_images=4, image_size=32,
                                   progress=False)
    images, masks = kd.data.synthetic_arrays("val", num_images=4, image_size=32)
    ds = kd.data.folder(*dirs["val"], num_classes=6, batch_size=4, output="tuple")
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), masks)
    train = kd.data.folder(*dirs["val"], num_classes=6, batch_size=2, training=True,
                           crop_size=24)
    for batch in train:
        assert batch["images"].shape == (2, 24, 24, 3)
        assert set(np.unique(batch["segmentation_masks"].numpy())) <= set(range(6)) | {255}
