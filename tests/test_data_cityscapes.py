"""Cityscapes folders on a fake tree; labelId -> trainId checked against cityscapesscripts."""

import numpy as np
import pytest
from PIL import Image

import keras_deeplab as kd


def test_mapping_equals_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    expected = np.full(256, 255)
    for label in labels:
        if label.id >= 0:
            expected[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
    got = kd.data.label_ids_to_train_ids(np.arange(256)).numpy()
    np.testing.assert_array_equal(got, expected)


def _fake_tree(root, split="val", cities=("aachen", "bonn"), per_city=2, size=(16, 32)):
    rng = np.random.default_rng(1)
    pairs = []
    for city in cities:
        (root / "leftImg8bit" / split / city).mkdir(parents=True)
        (root / "gtFine" / split / city).mkdir(parents=True)
        for k in range(per_city):
            stem = f"{city}_000000_{k:06d}"
            image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            label = rng.integers(0, 34, size, dtype=np.uint8)
            Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(label).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            pairs.append((image, label))
    return pairs


def test_reads_fake_tree_with_train_ids(tmp_path):
    from cityscapesscripts.helpers.labels import id2label

    pairs = _fake_tree(tmp_path)
    ds = kd.data.cityscapes(str(tmp_path), "val", batch_size=4)
    batch = next(iter(ds))
    images = np.stack([p[0] for p in pairs])
    expected = np.vectorize(lambda i: id2label[int(i)].trainId)(np.stack([p[1] for p in pairs]))
    np.testing.assert_array_equal(batch["images"].numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(batch["segmentation_masks"].numpy()[..., 0], expected)
    train = kd.data.cityscapes(str(tmp_path), "val", batch_size=2, training=True, crop_size=24)
    for b in train:
        assert b["images"].shape == (2, 24, 24, 3)
        assert set(np.unique(b["segmentation_masks"].numpy())) <= set(range(19)) | {255}


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        kd.data.cityscapes(str(tmp_path), "train")
    _fake_tree(tmp_path)
    (tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="bonn_000000_000001_leftImg8bit.png"):
        kd.data.cityscapes(str(tmp_path), "val")


def test_label_train_ids_files_and_coarse_train_extra(tmp_path):
    from cityscapesscripts.helpers.labels import id2label

    pairs = _fake_tree(tmp_path, split="train_extra")
    (tmp_path / "gtFine").rename(tmp_path / "gtCoarse")
    for path in (tmp_path / "gtCoarse").rglob("*_gtFine_labelIds.png"):
        label_ids = np.asarray(Image.open(path))
        train_ids = np.vectorize(lambda i: id2label[int(i)].trainId)(label_ids)
        train_ids = np.where((train_ids < 0) | (train_ids > 18), 255, train_ids).astype(np.uint8)
        stem = path.name.replace("_gtFine_labelIds.png", "")
        path.rename(path.parent / f"{stem}_gtCoarse_labelIds.png")
        Image.fromarray(train_ids).save(path.parent / f"{stem}_gtCoarse_labelTrainIds.png")
    mapped = next(iter(kd.data.cityscapes(str(tmp_path), "train_extra", annotation="coarse",
                                          batch_size=4, training=False)))
    direct = next(iter(kd.data.cityscapes(str(tmp_path), "train_extra", annotation="coarse",
                                          label_type="labelTrainIds", batch_size=4,
                                          training=False)))
    np.testing.assert_array_equal(mapped["segmentation_masks"].numpy(),
                                  direct["segmentation_masks"].numpy())
    assert len(pairs) == 4
    # a trainIds file holding a labelId (e.g. 33) is an error naming it
    bad = next((tmp_path / "gtCoarse").rglob("*_labelTrainIds.png"))
    Image.fromarray(np.full((16, 32), 33, np.uint8)).save(bad)
    with pytest.raises(Exception, match=bad.name):
        list(kd.data.cityscapes(str(tmp_path), "train_extra", annotation="coarse",
                                label_type="labelTrainIds", batch_size=1, training=False))


@pytest.mark.parametrize("augment_on", ["data", "device"])
def test_training_crops_hold_train_ids_only(tmp_path, augment_on):
    # The labelId -> trainId lookup runs after the crop (data) or before batching (device).
    _fake_tree(tmp_path, split="train", size=(40, 56))
    ds = kd.data.cityscapes(str(tmp_path), "train", batch_size=2, crop_size=48,
                            augment_on=augment_on, augment={"max_rotation": 10})
    layer = kd.data.SegmentationAugmentation(48, {"max_rotation": 10})
    values = set()
    for batch in ds:
        batch = layer(batch) if augment_on == "device" else batch
        values |= set(np.unique(np.asarray(batch["segmentation_masks"])))
    assert values <= set(range(19)) | {255} and len(values) > 5


def test_corrupt_and_truncated_files_are_named(tmp_path):
    _fake_tree(tmp_path)
    image = tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000001_leftImg8bit.png"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(Exception, match="bonn_000000_000001_leftImg8bit.png.*truncated"):
        list(kd.data.cityscapes(str(tmp_path), "val", batch_size=1))
    image.write_bytes(b"")  # empty file
    with pytest.raises(Exception, match="bonn_000000_000001_leftImg8bit.png is empty.*re-download"):
        list(kd.data.cityscapes(str(tmp_path), "val", batch_size=1))
    image.write_bytes(data)
    label = tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000000_gtFine_labelIds.png"
    Image.fromarray(np.zeros((8, 32), np.uint8)).save(label)  # size mismatch
    with pytest.raises(Exception, match="size mismatch.*bonn_000000_000000"):
        list(kd.data.cityscapes(str(tmp_path), "val", batch_size=1))
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(label)  # colour label image
    with pytest.raises(Exception, match="bonn_000000_000000_gtFine_labelIds.png is a colour.*single-channel"):
        list(kd.data.cityscapes(str(tmp_path), "val", batch_size=1))
