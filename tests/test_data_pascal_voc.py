"""PASCAL VOC + SBD on fake trees: palette masks read as indices, train_aug list, .mat masks."""

import numpy as np
import pytest
from PIL import Image

import keras_deeplab as kd


def _palette():
    pal = np.zeros((256, 3), np.uint8)
    pal[:21] = np.random.default_rng(0).integers(0, 256, (21, 3))
    pal[255] = (224, 224, 192)
    return pal.ravel().tolist()


def _voc(root, ids_train=("a", "b"), ids_val=("c",), size=(12, 16)):
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    rng = np.random.default_rng(2)
    data = {}
    for i in ids_train + ids_val:
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        mask = rng.choice(np.array([0, 3, 20, 255], np.uint8), size)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{i}.jpg", quality=100, subsampling=0)
        png = Image.fromarray(mask, mode="L").convert("P")
        png.putpalette(_palette())
        png.putdata(mask.ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{i}.png")
        data[i] = (np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg")), mask)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids_train) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids_val) + "\n")
    return root / "VOCdevkit", data


def test_palette_masks_read_as_indices(tmp_path):
    root, data = _voc(tmp_path)
    assert Image.open(root / "VOC2012/SegmentationClass/a.png").mode == "P"
    ds = kd.data.pascal_voc(str(root), "train", batch_size=2, training=False)
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["segmentation_masks"].numpy()[..., 0],
                                  np.stack([data["a"][1], data["b"][1]]))
    # JPEG decoders (TF vs PIL) may differ by rounding
    diff = batch["images"].numpy() - np.stack([data["a"][0], data["b"][0]])
    assert np.abs(diff).max() <= 2


def test_train_aug_list_and_mat_masks(tmp_path):
    import scipy.io as scipy_io  # a dev extra (SBD .mat masks): missing must fail, not skip

    root, data = _voc(tmp_path)
    sbd = tmp_path / "SBD"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("c\nd\n")   # c is VOC val: must be excluded
    (sbd / "val.txt").write_text("e\n")
    rng = np.random.default_rng(3)
    masks = {}
    for i in ("c", "d", "e"):
        mask = rng.integers(0, 21, (12, 16)).astype(np.uint8)
        masks[i] = mask
        # SBD layout: GTcls is a 1x1 struct whose Segmentation field is the mask
        gt = np.empty((1, 1), dtype=[("Segmentation", object)])
        gt[0, 0]["Segmentation"] = mask
        scipy_io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": gt})
        if i != "c":
            image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "VOC2012/JPEGImages" / f"{i}.jpg")
    from keras_deeplab.data.pascal_voc import train_aug_ids

    assert train_aug_ids(str(root), str(sbd)) == ["a", "b", "d", "e"]
    ds = kd.data.pascal_voc(str(root), "train_aug", sbd_root=str(sbd), batch_size=4,
                            training=False)
    got = next(iter(ds))["segmentation_masks"].numpy()[..., 0]
    np.testing.assert_array_equal(got[2], masks["d"])
    np.testing.assert_array_equal(got[3], masks["e"])
    np.testing.assert_array_equal(got[0], data["a"][1])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        kd.data.pascal_voc(str(tmp_path), "train")
    root, _ = _voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        kd.data.pascal_voc(str(root), "trainval")
    with pytest.raises(ValueError, match="sbd_root"):
        kd.data.pascal_voc(str(root), "train_aug")
    rgb = np.zeros((12, 16, 3), np.uint8)
    Image.fromarray(rgb).save(root / "VOC2012/SegmentationClass/b.png")
    with pytest.raises(Exception, match=r"b.png is a colour \(RGB\) image.*single-channel \(L or P"):
        list(kd.data.pascal_voc(str(root), "train", batch_size=1, training=False))
