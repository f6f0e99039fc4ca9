"""Small fake Cityscapes and PASCAL VOC trees in the official on-disk layouts.

The tests and the recipes' ``--synthetic`` mode write one of these and then run the real code
path (file listing, decoding, label mapping, augmentation, training, evaluation, export) on it.
Content comes from `keras_deeplab.data.synthetic_arrays` (textured objects at several scales),
so a model can actually learn something in a few epochs; each synthetic class is written as a
real class of the dataset (`SYNTHETIC_CITYSCAPES_CLASSES`, `SYNTHETIC_VOC_CLASSES`), with the label
table of `keras_deeplab.data.labels` and the palette of `keras_deeplab.data.palette`.
"""

from __future__ import annotations

import os

import numpy as np

from keras_deeplab.data.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_LABELS,
    CITYSCAPES_TRAIN_ID_TO_LABEL_ID,
    VOC_CLASSES,
)
from keras_deeplab.data.palette import pil_palette
from keras_deeplab.data.synthetic import synthetic_arrays
from keras_deeplab.utils import IGNORE_LABEL

#: Dataset class written for each synthetic class id 0..7 (background first).
SYNTHETIC_CITYSCAPES_CLASSES = ("road", "building", "vegetation", "sky", "person", "car",
                                "bicycle", "pole")
SYNTHETIC_VOC_CLASSES = ("background", "person", "car", "cat", "dog", "bird", "bottle", "chair")

#: The same as class ids: synthetic class -> Cityscapes trainId / VOC class id.
SYNTHETIC_TO_CITYSCAPES_TRAINID = tuple(CITYSCAPES_CLASSES.index(n)
                                        for n in SYNTHETIC_CITYSCAPES_CLASSES)
SYNTHETIC_TO_VOC = tuple(VOC_CLASSES.index(n) for n in SYNTHETIC_VOC_CLASSES)

# Cityscapes classes that get instance ids (one instance per image half) in instanceIds PNGs.
_INSTANCE_LABEL_IDS = tuple(c.label_id for c in CITYSCAPES_LABELS if c.name in ("person", "car"))


def write_fake_cityscapes(root, num_images=None, image_size=64, num_classes=6, seed=0,
                          cities=("aachen", "bochum")):
    """Writes ``leftImg8bit/`` and ``gtFine/`` (labelIds, labelTrainIds, instanceIds PNGs).

    Images are ``image_size x 2*image_size`` (Cityscapes' 1:2 aspect), two synthetic images
    side by side; a 2-pixel void frame (labelId 0, "unlabeled", trainId 255) exercises the
    ignore label. labelTrainIds files hold what cityscapesscripts' ``createTrainIdLabelImgs``
    would write (trainIds 0..18, 255 elsewhere).

    Args:
        root: str. Output root (created).
        num_images: dict split -> count. Defaults to {"train": 8, "val": 4}.
        image_size: int. Image height in pixels (>= 32). Defaults to 64.
        num_classes: int. Synthetic classes used (2..8). Defaults to 6.
        seed: int. Defaults to 0.
        cities: city folder names the images are spread over.

    Returns:
        ``root``.
    """
    from PIL import Image

    num_images = num_images or {"train": 8, "val": 4}
    lut = CITYSCAPES_TRAIN_ID_TO_LABEL_ID[list(SYNTHETIC_TO_CITYSCAPES_TRAINID)]
    for split, count in num_images.items():
        images, masks = synthetic_arrays(split, num_images=2 * count, image_size=image_size,
                                         num_classes=num_classes, seed=seed)
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            image = np.concatenate([images[2 * i], images[2 * i + 1]], axis=1)
            classes = np.concatenate([masks[2 * i, ..., 0], masks[2 * i + 1, ..., 0]], axis=1)
            label_ids = lut[classes].astype(np.uint8)
            label_ids[:2], label_ids[-2:], label_ids[:, :2], label_ids[:, -2:] = 0, 0, 0, 0
            train_ids = CITYSCAPES_LABEL_ID_TO_TRAIN_ID[label_ids]
            instance_ids = label_ids.astype(np.uint16)
            for lid in _INSTANCE_LABEL_IDS:
                half = (np.arange(label_ids.shape[1]) >= image_size)[None, :]
                inst = (lid * 1000 + half).astype(np.uint16)
                sel = label_ids == lid
                instance_ids[sel] = np.broadcast_to(inst, label_ids.shape)[sel]
            img_dir = os.path.join(root, "leftImg8bit", split, city)
            gt_dir = os.path.join(root, "gtFine", split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            Image.fromarray(image).save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
            Image.fromarray(label_ids, mode="L").save(
                os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"))
            Image.fromarray(train_ids, mode="L").save(
                os.path.join(gt_dir, f"{stem}_gtFine_labelTrainIds.png"))
            Image.fromarray(instance_ids).save(
                os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"))
    return root


def write_fake_voc(root, num_images=None, image_size=64, num_classes=6, seed=0):
    """Writes ``VOCdevkit/VOC2012`` with JPEGImages, palette SegmentationClass PNGs (object
    boundaries marked 255 as in VOC, the devkit colour map as the PNG palette) and
    ``ImageSets/Segmentation/{<split>,trainval}.txt``.

    Args:
        root: str. Output root; the tree is ``root/VOCdevkit/VOC2012``.
        num_images: dict split -> count. Defaults to {"train": 8, "val": 4}.
        image_size: int. Image side in pixels (>= 32). Defaults to 64.
        num_classes: int. Synthetic classes used (2..8). Defaults to 6.
        seed: int. Defaults to 0.

    Returns:
        The ``VOCdevkit`` path.
    """
    from PIL import Image

    num_images = num_images or {"train": 8, "val": 4}
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    lut = np.asarray(SYNTHETIC_TO_VOC, np.uint8)
    palette = pil_palette("voc")
    all_ids = []
    for split, count in num_images.items():
        images, masks = synthetic_arrays(split, num_images=count, image_size=image_size,
                                         num_classes=num_classes, seed=seed)
        ids = []
        for i in range(count):
            name = f"2007_{split}_{i:06d}"
            classes = lut[masks[i, ..., 0]]
            edge = np.zeros(classes.shape, bool)
            edge[1:] |= classes[1:] != classes[:-1]
            edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
            classes = np.where(edge, IGNORE_LABEL, classes).astype(np.uint8)
            Image.fromarray(images[i]).save(os.path.join(voc, "JPEGImages", f"{name}.jpg"),
                                            quality=95)
            png = Image.fromarray(classes, mode="P")
            png.putpalette(palette)
            png.save(os.path.join(voc, "SegmentationClass", f"{name}.png"))
            ids.append(name)
        with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        all_ids += ids
    with open(os.path.join(voc, "ImageSets", "Segmentation", "trainval.txt"), "w") as f:
        f.write("\n".join(all_ids) + "\n")
    return os.path.join(root, "VOCdevkit")
