"""Bad-input suite: every loader over a tree of broken files (issue 13).

Each case builds a small valid tree, breaks one thing, and runs the loader to the end of the
data (building the pipeline and iterating every batch). It asserts that the loader raises,
that the message names the broken file, and that it says what to do; the few inputs that
must be accepted (OS metadata files, upper-case extensions) are checked to yield exactly
the right data. No case may yield data silently.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_deeplab as kd


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


IMAGE = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
MASK = np.array([[0, 1, 255, 1, 0, 1]] * 4, np.uint8)


def _run(make):
    """Builds the dataset and reads all of it (errors may come at either point)."""
    return [b for b in make()]


def _expect(make, *fragments, exc=Exception):
    with pytest.raises(exc) as info:
        got = _run(make)
        pytest.fail(f"no error; the loader yielded {len(got)} batches")  # pragma: no cover
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message[:1500]}"


# ---------------------------------------------------------------- kd.data.folder


def _folder_tree(tmp_path, n=2):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(n):
        (tmp_path / "images" / f"f{i}.png").write_bytes(_png(IMAGE))
        (tmp_path / "masks" / f"f{i}.png").write_bytes(_png(MASK))
    return str(tmp_path / "images"), str(tmp_path / "masks")


def _folder(images, masks, **kw):
    return lambda: kd.data.folder(images, masks, num_classes=2, **{"batch_size": 1, **kw})


FOLDER_CASES = {
    # name: (how to break the tree, fragments the error must hold)
    "jpeg_mask_named_png": (lambda t: (t / "masks/f1.png").write_bytes(_jpeg(np.stack([MASK] * 3,
                                                                                     -1))),
                            ["f1.png holds JPEG bytes", "save masks losslessly"]),
    "rgb_mask": (lambda t: (t / "masks/f1.png").write_bytes(_png(np.stack([MASK] * 3, -1))),
                 ["f1.png is a colour (RGB)", "single-channel (L or P"]),
    "mask_value_out_of_range": (lambda t: (t / "masks/f1.png").write_bytes(_png(MASK + 3)),
                                ["f1.png holds values", "value_map=", "invalid_to_ignore"]),
    "empty_image": (lambda t: (t / "images/f1.png").write_bytes(b""),
                    ["f1.png is empty (0 bytes)", "re-download"]),
    "truncated_image": (lambda t: (t / "images/f1.png").write_bytes(_png(IMAGE)[:-30]),
                        ["f1.png is a truncated PNG", "re-download"]),
    "text_as_image": (lambda t: (t / "images/f1.png").write_text("not an image"),
                      ["f1.png is not a PNG/JPEG", "remove it"]),
    "size_mismatch": (lambda t: (t / "masks/f1.png").write_bytes(_png(MASK[:, :4])),
                      ["size mismatch", "f1.png", "nearest neighbour"]),
    "image_without_mask": (lambda t: (t / "images/f2.png").write_bytes(_png(IMAGE)),
                           ["f2.png", "add the masks or remove the images"]),
    "mask_without_image": (lambda t: (t / "masks/f2.png").write_bytes(_png(MASK)),
                           ["f2.png", "add the images or remove the masks"]),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_folder_bad_input(tmp_path, case):
    images, masks = _folder_tree(tmp_path)
    FOLDER_CASES[case][0](tmp_path)
    _expect(_folder(images, masks), *FOLDER_CASES[case][1])


def test_folder_eval_on_photos_of_different_sizes_names_files_and_batch_size_1(tmp_path):
    images, masks = _folder_tree(tmp_path)
    (tmp_path / "images/f1.png").write_bytes(_png(np.zeros((5, 6, 3))))
    (tmp_path / "masks/f1.png").write_bytes(_png(np.zeros((5, 6))))
    _expect(_folder(images, masks, batch_size=8), "f0.png' is 6x4", "f1.png' is 6x5",
            "batch_size=1", exc=ValueError)
    got = _run(_folder(images, masks, batch_size=1))  # the fix it names works
    assert [b["images"].shape[1] for b in got] == [4, 5]


def test_folder_missing_and_empty_folders(tmp_path):
    _expect(lambda: kd.data.folder(str(tmp_path / "nope"), str(tmp_path), 2), "nope",
            "does not exist", exc=FileNotFoundError)
    (tmp_path / "empty").mkdir()
    _expect(lambda: kd.data.folder(str(tmp_path / "empty"), str(tmp_path), 2), "empty",
            "No image files", exc=FileNotFoundError)


# ---------------------------------------------------------------- kd.data.cityscapes

STEM = "bonn_000000_000000"


def _cs_tree(tmp_path):
    city = tmp_path / "leftImg8bit/val/bonn"
    gt = tmp_path / "gtFine/val/bonn"
    city.mkdir(parents=True)
    gt.mkdir(parents=True)
    (city / f"{STEM}_leftImg8bit.png").write_bytes(_png(IMAGE))
    (gt / f"{STEM}_gtFine_labelIds.png").write_bytes(_png(np.full((4, 6), 7)))  # road
    return str(tmp_path)


def _cs(root):
    return lambda: kd.data.cityscapes(root, "val", batch_size=1)


CS_CASES = {
    "stray_file_in_split": (lambda t: (t / "leftImg8bit/val/notes.txt").write_text("x"),
                            ["leftImg8bit/val/notes.txt", "move or delete that file"]),
    "jpg_image": (lambda t: (t / f"leftImg8bit/val/bonn/{STEM[:-1]}1_leftImg8bit.jpg")
                  .write_bytes(_jpeg(IMAGE)), ["_leftImg8bit.jpg", "rename it"]),
    "missing_label": (lambda t: (t / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png").unlink(),
                      [f"{STEM}_gtFine_labelIds.png", "download gtFine"]),
    "empty_label": (lambda t: (t / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png")
                    .write_bytes(b""), [f"{STEM}_gtFine_labelIds.png is empty", "re-download"]),
    "jpeg_label": (lambda t: (t / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png")
                   .write_bytes(_jpeg(np.full((4, 6, 3), 7))),
                   [f"{STEM}_gtFine_labelIds.png holds JPEG bytes", "lossless"]),
    "colour_label": (lambda t: (t / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png")
                     .write_bytes(_png(np.full((4, 6, 3), 7))),
                     [f"{STEM}_gtFine_labelIds.png is a colour", "single-channel"]),
    "truncated_image": (lambda t: (t / f"leftImg8bit/val/bonn/{STEM}_leftImg8bit.png")
                        .write_bytes(_png(IMAGE)[:-30]),
                        [f"{STEM}_leftImg8bit.png is a truncated PNG", "re-download"]),
    "size_mismatch": (lambda t: (t / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png")
                      .write_bytes(_png(np.full((4, 5), 7))),
                      ["size mismatch", f"{STEM}_gtFine_labelIds.png", "use the label file"]),
}


@pytest.mark.parametrize("case", sorted(CS_CASES))
def test_cityscapes_bad_input(tmp_path, case):
    root = _cs_tree(tmp_path)
    CS_CASES[case][0](tmp_path)
    _expect(_cs(root), *CS_CASES[case][1])


def test_cityscapes_16bit_label_ids_above_255(tmp_path):
    root = _cs_tree(tmp_path)
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 6), 300, np.uint16)).save(buf, "PNG")
    (tmp_path / f"gtFine/val/bonn/{STEM}_gtFine_labelIds.png").write_bytes(buf.getvalue())
    _expect(_cs(root), f"{STEM}_gtFine_labelIds.png holds values above 255",
            "official *_gtFine_labelIds.png")


def test_cityscapes_ds_store_and_upper_case_extensions_are_read(tmp_path):
    """OS metadata is skipped; *_leftImg8bit.PNG (upper case) is read, not skipped."""
    root = _cs_tree(tmp_path)
    (tmp_path / "leftImg8bit/val/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "leftImg8bit/val/bonn/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    other = "bonn_000000_000001"
    (tmp_path / f"leftImg8bit/val/bonn/{other}_leftImg8bit.PNG").write_bytes(_png(IMAGE // 2))
    (tmp_path / f"gtFine/val/bonn/{other}_gtFine_labelIds.PNG").write_bytes(
        _png(np.full((4, 6), 26)))  # car -> trainId 13
    got = _run(_cs(root))
    assert len(got) == 2
    np.testing.assert_array_equal(got[0]["images"][0], IMAGE)
    np.testing.assert_array_equal(got[1]["images"][0], IMAGE // 2)
    np.testing.assert_array_equal(got[0]["segmentation_masks"][0, ..., 0], 0)
    np.testing.assert_array_equal(got[1]["segmentation_masks"][0, ..., 0], 13)


# ---------------------------------------------------------------- kd.data.pascal_voc


def _voc_tree(tmp_path, ids=("2007_000032", "2007_000039")):
    voc = tmp_path / "VOCdevkit/VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for i in ids:
        (voc / f"JPEGImages/{i}.jpg").write_bytes(_jpeg(IMAGE))
        (voc / f"SegmentationClass/{i}.png").write_bytes(_png(MASK))
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in ids))
    return str(tmp_path / "VOCdevkit")


def _voc(root):
    return lambda: kd.data.pascal_voc(root, "val", batch_size=1)


SEG = "VOCdevkit/VOC2012/SegmentationClass"
LIST = "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
VOC_CASES = {
    "empty_list": (lambda t: (t / LIST).write_text(""), ["val.txt", "is empty", "one image id"]),
    "id_with_space": (lambda t: (t / LIST).write_text("2007_000032\n2007 000039\n"),
                      ["val.txt", "line 2", "'2007 000039'", "one id per line"]),
    "zero_byte_mask": (lambda t: (t / SEG / "2007_000039.png").write_bytes(b""),
                       ["2007_000039.png is empty (0 bytes)", "re-download"]),
    "jpeg_mask": (lambda t: (t / SEG / "2007_000039.png").write_bytes(_jpeg(np.stack([MASK] * 3,
                                                                                   -1))),
                  ["2007_000039.png holds JPEG bytes", "lossless"]),
    "rgb_mask": (lambda t: (t / SEG / "2007_000039.png").write_bytes(_png(np.stack([MASK] * 3,
                                                                                 -1))),
                 ["2007_000039.png is a colour (RGB)", "single-channel"]),
    "mask_value_30": (lambda t: (t / SEG / "2007_000039.png").write_bytes(_png(MASK + 30)),
                      ["2007_000039.png holds values outside 0..20 and 255", "palette"]),
    "missing_image": (lambda t: (t / "VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg").unlink(),
                      ["2007_000039.jpg", "is missing"]),
    "missing_mask": (lambda t: (t / SEG / "2007_000039.png").unlink(),
                     ["2007_000039", "looked for"]),
    "truncated_mask": (lambda t: (t / SEG / "2007_000039.png").write_bytes(_png(MASK)[:-30]),
                       ["2007_000039.png is a truncated PNG", "re-download"]),
}


@pytest.mark.parametrize("case", sorted(VOC_CASES))
def test_pascal_voc_bad_input(tmp_path, case):
    root = _voc_tree(tmp_path)
    VOC_CASES[case][0](tmp_path)
    _expect(_voc(root), *VOC_CASES[case][1])


# ---------------------------------------------------------------- TFRecord reader


def _record(key, image_bytes, mask_bytes):
    def feature(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": feature(image_bytes), "mask/encoded": feature(mask_bytes),
        "key": feature(key)})).SerializeToString()


@pytest.mark.parametrize("case,image,mask,fragments", [
    ("jpeg_mask", _png(IMAGE), _jpeg(np.stack([MASK] * 3, -1)), ["record b2", "JPEG bytes"]),
    ("empty_image", b"", _png(MASK), ["record b2", "is empty"]),
    ("rgb_mask", _png(IMAGE), _png(np.stack([MASK] * 3, -1)), ["record b2", "single-channel"]),
])
def test_tfrecord_bad_records_name_the_record(tmp_path, case, image, mask, fragments):
    path = str(tmp_path / "x-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(_record(b"a1", _png(IMAGE), _png(MASK)))
        writer.write(_record(b"b2", image, mask))
    _expect(lambda: kd.data.tfrecords(path, num_classes=2, batch_size=1), *fragments,
            os.path.basename(path))
    _expect(lambda: kd.data.tfrecords(str(tmp_path / "none-*"), 2), "No TFRecord shards",
            "write_tfrecords", exc=FileNotFoundError)


# ---------------------------------------------------------------- the Predictor's reader


@pytest.mark.parametrize("data,fragments", [
    (b"", ["photo.png is empty"]),
    (b"GIF89a-not-really", ["photo.png cannot be decoded", "re-download"]),
    (_png(IMAGE)[:-30], ["photo.png is a truncated PNG"]),
])
def test_read_image_bad_files(tmp_path, data, fragments):
    (tmp_path / "photo.png").write_bytes(data)
    _expect(lambda: [kd.inference.read_image(str(tmp_path / "photo.png"))], *fragments,
            exc=kd.inference.ImageReadError)
