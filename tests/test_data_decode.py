"""keras_deeplab.data.decode: one decoder for every loader and the Predictor (issue 13, items 1-4).

References are independent of the decoder: NumPy bit arithmetic (``v >> 8``), PIL's own
``convert("RGB")`` and TensorFlow's ``decode_jpeg(dct_method="INTEGER_ACCURATE")`` /
``decode_png`` on the same bytes.
"""

import io
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_deeplab as kd
from keras_deeplab.data import decode

# ---------------------------------------------------------------- tiny trees


def _png16(array):
    """16-bit grayscale PNG bytes of ``array`` (uint16), written by PIL."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 12: 'mode' deprecated
        Image.fromarray(np.asarray(array, np.uint16), mode="I;16").save(buf, "PNG")
    return buf.getvalue()


def _palette_png(indices):
    """P-mode PNG whose colours differ from the indices (index 1 -> (128, 0, 0), ...)."""
    img = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:, 0] = np.arange(256)[::-1]
    palette[1] = (128, 0, 0)
    palette[2] = (0, 128, 0)
    img.putpalette(palette.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(array, quality=90):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _folder(tmp_path, image_bytes, mask_bytes, image_name="a.png", mask_name="a.png"):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    (tmp_path / "images" / image_name).write_bytes(image_bytes)
    (tmp_path / "masks" / mask_name).write_bytes(mask_bytes)
    return str(tmp_path / "images"), str(tmp_path / "masks")


def _cityscapes(tmp_path, image_bytes, label_bytes, label_type="labelIds"):
    city = tmp_path / "leftImg8bit" / "val" / "bonn"
    gt = tmp_path / "gtFine" / "val" / "bonn"
    city.mkdir(parents=True)
    gt.mkdir(parents=True)
    (city / "bonn_000000_000000_leftImg8bit.png").write_bytes(image_bytes)
    (gt / f"bonn_000000_000000_gtFine_{label_type}.png").write_bytes(label_bytes)
    return str(tmp_path)


def _voc(tmp_path, image_bytes, mask_bytes, ids=("a",)):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        (voc / "JPEGImages" / f"{i}.jpg").write_bytes(image_bytes)
        (voc / "SegmentationClass" / f"{i}.png").write_bytes(mask_bytes)
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in ids))
    return str(tmp_path / "VOCdevkit")


def _first(ds):
    batch = next(iter(ds))
    return batch["images"].numpy()[0], batch["segmentation_masks"].numpy()[0, ..., 0]


# ---------------------------------------------------------------- item 1: 16-bit masks


def test_16bit_mask_keeps_its_values_in_folder(tmp_path):
    images, masks = _folder(tmp_path, _png(np.zeros((1, 2, 3))), _png16([[1, 255]]))
    _, mask = _first(kd.data.folder(images, masks, num_classes=2, batch_size=1))
    np.testing.assert_array_equal(mask, [[1, 255]])


def test_16bit_mask_beyond_the_classes_is_refused_naming_the_file(tmp_path):
    images, masks = _folder(tmp_path, _png(np.zeros((1, 2, 3))), _png16([[1, 1000]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a.png holds values.*value_map"):
        _first(kd.data.folder(images, masks, num_classes=2, batch_size=1))


def test_16bit_cityscapes_label_ids_are_read_as_label_ids(tmp_path):
    root = _cityscapes(tmp_path, _png(np.zeros((1, 2, 3))), _png16([[7, 26]]))
    # labelId 7 (road) -> trainId 0, labelId 26 (car) -> trainId 13 (cityscapesscripts' table)
    _, mask = _first(kd.data.cityscapes(root, "val", batch_size=1))
    np.testing.assert_array_equal(mask, [[0, 13]])
    source = kd.data.CityscapesSource(root, "val")
    raw = next(iter(source.raw_dataset()))["segmentation_masks"].numpy()[..., 0]
    np.testing.assert_array_equal(raw, [[7, 26]])


def test_16bit_cityscapes_values_above_255_are_refused(tmp_path):
    root = _cityscapes(tmp_path, _png(np.zeros((1, 2, 3))), _png16([[7, 300]]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"labelIds.png holds values above 255.*official"):
        _first(kd.data.cityscapes(root, "val", batch_size=1))


def test_16bit_voc_mask_stays_1_and_255(tmp_path):
    root = _voc(tmp_path, _jpeg(np.zeros((1, 2, 3))), _png16([[1, 255]]))
    _, mask = _first(kd.data.pascal_voc(root, "val", batch_size=1))
    np.testing.assert_array_equal(mask, [[1, 255]])


# ---------------------------------------------------------------- item 2: lossy masks


@pytest.mark.parametrize("loader", ["folder", "cityscapes", "pascal_voc"])
def test_jpeg_bytes_under_a_png_mask_name_are_rejected(tmp_path, loader):
    jpeg_mask = _jpeg(np.zeros((8, 8, 3)))
    image = _png(np.zeros((8, 8, 3)))
    if loader == "folder":
        images, masks = _folder(tmp_path, image, jpeg_mask)
        name = "masks/a.png"

        def load():
            return kd.data.folder(images, masks, num_classes=2, batch_size=1)
    elif loader == "cityscapes":
        root = _cityscapes(tmp_path, image, jpeg_mask)
        name = "bonn_000000_000000_gtFine_labelIds.png"

        def load():
            return kd.data.cityscapes(root, "val", batch_size=1)
    else:
        root = _voc(tmp_path, _jpeg(np.zeros((8, 8, 3))), jpeg_mask)
        name = "SegmentationClass/a.png"

        def load():
            return kd.data.pascal_voc(root, "val", batch_size=1)
    # (the pipeline decodes its first example to size its cache, so building it already fails)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name} holds JPEG bytes.*lossless.*PNG"):
        _first(load())


def test_decode_mask_checks_bytes_not_names():
    with pytest.raises(decode.DecodeError, match="m.png holds JPEG bytes"):
        decode.decode_mask(_jpeg(np.zeros((4, 4, 3))), "m.png")
    # PNG bytes under a .jpg name are lossless and read
    np.testing.assert_array_equal(decode.decode_mask(_png([[3, 4]]), "m.jpg"), [[3, 4]])


# ---------------------------------------------------------------- item 3: palette masks


@pytest.mark.parametrize("loader", ["folder", "cityscapes", "pascal_voc"])
def test_palette_masks_are_read_as_indices(tmp_path, loader):
    p_mask = _palette_png([[0, 1]])
    assert Image.open(io.BytesIO(p_mask)).mode == "P"
    if loader == "folder":
        images, masks = _folder(tmp_path, _png(np.zeros((1, 2, 3))), p_mask)
        ds = kd.data.folder(images, masks, num_classes=2, batch_size=1)
    elif loader == "cityscapes":
        root = _cityscapes(tmp_path, _png(np.zeros((1, 2, 3))), p_mask, "labelTrainIds")
        ds = kd.data.cityscapes(root, "val", batch_size=1, label_type="labelTrainIds")
    else:
        ds = kd.data.pascal_voc(_voc(tmp_path, _jpeg(np.zeros((1, 2, 3))), p_mask), "val",
                                batch_size=1)
    _, mask = _first(ds)
    np.testing.assert_array_equal(mask, [[0, 1]])


# ---------------------------------------------------------------- item 4: same pixels everywhere


def _formats():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 13, 3), np.uint8)
    gray = rng.integers(0, 256, (9, 13), np.uint8)
    sixteen = rng.integers(0, 65536, (9, 13), np.uint16)
    sixteen[0, :2] = (0, 1000)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (9, 13, 1), np.uint8)], -1)
    palette_idx = rng.integers(0, 3, (9, 13), np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:3] = [(10, 20, 30), (200, 100, 50), (0, 255, 7)]

    def save(arr, mode=None, fmt="PNG", **kw):
        img = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode=mode)
        if mode == "P":
            img.putpalette(pal.ravel().tolist())
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        files = {
            "rgb8.png": (save(rgb), rgb),
            "gray.png": (save(gray), np.repeat(gray[..., None], 3, -1)),
            "sixteen.png": (save(sixteen, "I;16"),
                            np.repeat((sixteen >> 8).astype(np.uint8)[..., None], 3, -1)),
            "rgba.png": (save(rgba), rgb),
            "palette.png": (save(palette_idx, "P"), pal[palette_idx]),
            "photo.jpg": (save(rgb, fmt="JPEG", quality=85), None),
            "photo420.jpg": (save(rgb, fmt="JPEG", quality=60, subsampling=2), None),
        }
    return files


def test_decode_image_values_against_independent_references():
    for name, (data, expected) in _formats().items():
        got = decode.decode_image(data, name)
        assert got.dtype == np.uint8 and got.shape == (9, 13, 3), name
        if name.endswith(".jpg"):
            # PIL's own decoding, and TensorFlow's accurate integer IDCT, agree exactly
            pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            tf_accurate = tf.io.decode_jpeg(data, channels=3,
                                            dct_method="INTEGER_ACCURATE").numpy()
            np.testing.assert_array_equal(got, pil, err_msg=name)
            np.testing.assert_array_equal(got, tf_accurate, err_msg=name)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=name)
    # the smallest input: 16-bit grayscale [[0, 1000]] -> [[0, 3]] (1000 >> 8)
    np.testing.assert_array_equal(decode.decode_image(_png16([[0, 1000]]))[..., 0], [[0, 3]])
    # 16-bit RGB PNG (written by TensorFlow): the high byte, as tf.io.decode_png gives it
    rgb16 = tf.io.encode_png(tf.constant([[[1000, 40000, 65535]]], tf.uint16)).numpy()
    np.testing.assert_array_equal(decode.decode_image(rgb16),
                                  tf.io.decode_png(rgb16, channels=3).numpy())
    np.testing.assert_array_equal(decode.decode_image(rgb16), [[[3, 156, 255]]])


def test_loaders_and_predictor_see_the_same_pixels(tmp_path):
    files = _formats()
    images_dir, masks_dir = tmp_path / "images", tmp_path / "masks"
    images_dir.mkdir()
    masks_dir.mkdir()
    for name, (data, _) in files.items():
        (images_dir / name).write_bytes(data)
        (masks_dir / (os.path.splitext(name)[0] + ".png")).write_bytes(
            _png(np.zeros((9, 13), np.uint8)))
    ds = kd.data.folder(str(images_dir), str(masks_dir), num_classes=2, batch_size=1)
    stems = sorted(os.path.splitext(n)[0] for n in files)
    loaded = {s: b["images"].numpy()[0] for s, b in zip(stems, ds)}

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    predictor = kd.inference.Predictor(model)
    fed = []
    original = predictor.engine.probabilities

    def record(batch):
        fed.append(np.array(batch))
        return original(batch)

    predictor.engine.probabilities = record
    for name in sorted(files):
        stem = os.path.splitext(name)[0]
        predictor.predict(str(images_dir / name))
        np.testing.assert_array_equal(fed[-1][0], loaded[stem], err_msg=name)
        # a PIL image of the same file goes through the same conversion
        predictor.predict(Image.open(images_dir / name))
        np.testing.assert_array_equal(fed[-1][0], loaded[stem], err_msg=name)
        np.testing.assert_array_equal(kd.inference.read_image(str(images_dir / name)),
                                      loaded[stem].astype(np.uint8), err_msg=name)
    # 16-bit: [[0, 1000]] is [[0, 3]] in both (was [[0, 3]] vs [[0, 255]])
    assert loaded["sixteen"][0, :2, 0].tolist() == [0.0, 3.0]

    # the VOC and TFRecord readers decode with the same function
    voc_root = _voc(tmp_path / "voc", files["photo.jpg"][0], _png(np.zeros((9, 13))))
    voc_image, _ = _first(kd.data.pascal_voc(voc_root, "val", batch_size=1))
    np.testing.assert_array_equal(voc_image, loaded["photo"])
    shards = kd.data.write_tfrecords(kd.data.FolderSource(str(images_dir), str(masks_dir), 2),
                                     str(tmp_path / "rec" / "x"), progress=False)
    from_records = [b["images"].numpy()[0] for b in kd.data.tfrecords(shards[0], 2,
                                                                      batch_size=1)]
    for stem, image in zip(stems, from_records):
        np.testing.assert_array_equal(image, loaded[stem], err_msg=stem)


def test_decoder_refusals_name_the_file():
    with pytest.raises(decode.DecodeError, match="x.png is empty"):
        decode.decode_image(b"", "x.png")
    with pytest.raises(decode.DecodeError, match="x.png is a truncated PNG"):
        decode.decode_image(_png(np.zeros((4, 4, 3)))[:-20], "x.png")
    with pytest.raises(decode.DecodeError, match="x.png is not a PNG"):
        decode.decode_image(b"hello world", "x.png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.float32)).save(buf, "TIFF")
    with pytest.raises(decode.DecodeError, match="x.tif holds floating-point pixels"):
        decode.decode_image(buf.getvalue(), "x.tif")
    rgba = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 4), np.uint8)).save(rgba, "PNG")
    with pytest.raises(decode.DecodeError, match=r"m.png is a colour \(RGBA\)"):
        decode.decode_mask(rgba.getvalue(), "m.png")
    with pytest.raises(kd.inference.ImageReadError, match="missing.png: no such file"):
        kd.inference.read_image("missing.png")
