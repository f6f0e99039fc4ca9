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
