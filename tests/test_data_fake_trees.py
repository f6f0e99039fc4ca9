"""Fake Cityscapes / VOC trees: files as the official tools write them, read back by the readers.

References: cityscapesscripts' label table (labelId -> trainId, instance ids), the VOC devkit
colour map, PIL for decoding the palette PNGs.
"""

import os

import numpy as np
from PIL import Image

import keras_deeplab as kd
from keras_deeplab.data import fake_trees


def test_fake_cityscapes_matches_cityscapesscripts_and_reads_back(tmp_path):
    from cityscapesscripts.helpers.labels import id2label, name2label

    root = kd.data.write_fake_cityscapes(str(tmp_path), {"val": 2}, image_size=32, seed=3)
    gt = tmp_path / "gtFine" / "val"
    stems = sorted(p.name[: -len("_gtFine_labelIds.png")] for p in gt.glob("*/*_labelIds.png"))
    assert len(stems) == 2
    expected_masks = []
    for stem in stems:
        city = stem.split("_")[0]
        label_ids = np.asarray(Image.open(gt / city / f"{stem}_gtFine_labelIds.png"))
        train_ids = np.asarray(Image.open(gt / city / f"{stem}_gtFine_labelTrainIds.png"))
        instances = np.asarray(Image.open(gt / city / f"{stem}_gtFine_instanceIds.png"))
        assert label_ids.shape == (32, 64)
        # what createTrainIdLabelImgs would write
        reference = np.vectorize(lambda i: id2label[int(i)].trainId)(label_ids)
        np.testing.assert_array_equal(train_ids, np.where(reference < 0, 255, reference))
        # void frame, and only the classes the synthetic ones stand for
        assert (label_ids[:2] == name2label["unlabeled"].id).all()
        names = {id2label[int(i)].name for i in np.unique(label_ids)}
        assert names <= set(fake_trees.SYNTHETIC_CITYSCAPES_CLASSES) | {"unlabeled"}
        # instance ids: labelId * 1000 + index for person / car, the labelId elsewhere
        for lid in (name2label["person"].id, name2label["car"].id):
            sel = label_ids == lid
            assert ((instances[sel] // 1000) == lid).all()
        other = ~np.isin(label_ids, (24, 26))
        np.testing.assert_array_equal(instances[other], label_ids[other])
        expected_masks.append(train_ids)
    batch = next(iter(kd.data.cityscapes(root, "val", batch_size=2)))
    np.testing.assert_array_equal(batch["segmentation_masks"].numpy()[..., 0],
                                  np.stack(expected_masks))


def test_fake_voc_palette_pngs_and_reader(tmp_path):
    voc = kd.data.write_fake_voc(str(tmp_path), {"train": 2, "val": 1}, image_size=32)
    base = os.path.join(voc, "VOC2012")
    with open(os.path.join(base, "ImageSets", "Segmentation", "trainval.txt")) as f:
        assert f.read().split() == ["2007_train_000000", "2007_train_000001", "2007_val_000000"]
    png = Image.open(os.path.join(base, "SegmentationClass", "2007_train_000000.png"))
    assert png.mode == "P"
    ids = np.asarray(png)
    assert 255 in ids  # object boundaries
    # the devkit's colours (VOClabelcolormap): person 15, boundary 255
    rgb = np.asarray(png.convert("RGB"))
    devkit = {0: (0, 0, 0), 3: (128, 128, 0), 7: (128, 128, 128), 8: (64, 0, 0),
              12: (64, 0, 128), 15: (192, 128, 128), 255: (224, 224, 192)}
    for class_id in np.unique(ids):
        assert {tuple(c) for c in rgb[ids == class_id]} == {devkit[int(class_id)]}
    ds = kd.data.pascal_voc(voc, "train", batch_size=2, training=False)
    masks = next(iter(ds))["segmentation_masks"].numpy()[..., 0]
    np.testing.assert_array_equal(masks[0], ids)


def test_class_correspondence_uses_the_label_tables():
    from cityscapesscripts.helpers.labels import trainId2label

    assert [trainId2label[t].name for t in fake_trees.SYNTHETIC_TO_CITYSCAPES_TRAINID] == list(
        fake_trees.SYNTHETIC_CITYSCAPES_CLASSES)
    # VOC devkit class ids: background 0, person 15, car 7, cat 8, dog 12, bird 3, bottle 5,
    # chair 9
    assert fake_trees.SYNTHETIC_TO_VOC == (0, 15, 7, 8, 12, 3, 5, 9)
    assert kd.training.write_fake_voc is kd.data.write_fake_voc  # re-exported, one definition
