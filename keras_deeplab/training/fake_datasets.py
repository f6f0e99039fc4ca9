"""Small fake Cityscapes and PASCAL VOC trees in the official on-disk layouts.

The recipes' ``--synthetic`` mode writes one of these and then runs the real code path
(file listing, decoding, label mapping, augmentation, training, evaluation, export) on it.
Content comes from `keras_deeplab.data.synthetic_arrays` (textured objects at several scales),
so a model can actually learn something in a few epochs.
"""

from __future__ import annotations

import os

import numpy as np

from keras_deeplab.training.cityscapes_export import CITYSCAPES_TRAINID_TO_LABELID

# synthetic class -> Cityscapes trainId / VOC class
SYNTHETIC_TO_CITYSCAPES_TRAINID = (0, 2, 8, 10, 11, 13, 18, 5)  # road building veg sky ...
SYNTHETIC_TO_VOC = (0, 15, 7, 8, 12, 3, 5, 9)  # background person car cat dog bird ...


def _synthetic(split, num_images, image_size, num_classes, seed):
    try:
        from keras_deeplab.data import synthetic_arrays
    except ImportError:  # data package without the synthetic generator: simple shapes
        return _simple_shapes(split, num_images, image_size, num_classes, seed)
    return synthetic_arrays(split, num_images=num_images, image_size=image_size,
                            num_classes=num_classes, seed=seed)


def _simple_shapes(split, num_images, image_size, num_classes, seed):
    """Rectangles of classes 1..num_classes-1 with class colours and noise on background."""
    rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}.get(split, 3)])
    colors = rng.integers(0, 256, (num_classes, 3))
    images = np.empty((num_images, image_size, image_size, 3), np.uint8)
    masks = np.zeros((num_images, image_size, image_size, 1), np.int32)
    for i in range(num_images):
        for _ in range(4):
            c = int(rng.integers(1, num_classes))
            y0, x0 = rng.integers(0, image_size - 4, 2)
            h, w = rng.integers(4, max(5, image_size // 2), 2)
            masks[i, y0:y0 + h, x0:x0 + w, 0] = c
        noise = rng.normal(0, 20, (image_size, image_size, 3))
        images[i] = np.clip(colors[masks[i, ..., 0]] + noise, 0, 255).astype(np.uint8)
    return images, masks


def write_fake_cityscapes(root, num_images=None, image_size=64, num_classes=6, seed=0,
                          cities=("aachen", "bochum")):
    """Writes ``leftImg8bit/`` and ``gtFine/`` (labelIds, labelTrainIds, instanceIds).

    Images are ``image_size x 2*image_size`` (Cityscapes' 1:2 aspect), two synthetic images
    side by side; a 2-pixel void frame (labelId 0, "unlabeled") exercises the ignore label.

    Args:
        root: str. Output root (created).
        num_images: dict split -> count. Defaults to {"train": 8, "val": 4}.
        image_size: int. Image height. Defaults to 64.
        num_classes: int. Synthetic classes used (2..8). Defaults to 6.
        seed: int. Defaults to 0.
        cities: city folder names the images are spread over.

    Returns:
        ``root``.
    """
    from PIL import Image

    num_images = num_images or {"train": 8, "val": 4}
    lut = np.asarray(CITYSCAPES_TRAINID_TO_LABELID)[list(SYNTHETIC_TO_CITYSCAPES_TRAINID)]
    for split, count in num_images.items():
        images, masks = _synthetic(split, 2 * count, image_size, num_classes, seed)
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            image = np.concatenate([images[2 * i], images[2 * i + 1]], axis=1)
            classes = np.concatenate([masks[2 * i, ..., 0], masks[2 * i + 1, ..., 0]], axis=1)
            label_ids = lut[classes].astype(np.uint8)
            label_ids[:2], label_ids[-2:], label_ids[:, :2], label_ids[:, -2:] = 0, 0, 0, 0
            train_ids = np.full(label_ids.shape, 255, np.uint8)
            for t, lid in enumerate(CITYSCAPES_TRAINID_TO_LABELID):
                train_ids[label_ids == lid] = t
            instance_ids = label_ids.astype(np.uint16)
            for lid in (24, 26):  # person, car: one instance per image half
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


def voc_palette():
    """The PASCAL VOC palette as a flat list of 768 ints (for ``Image.putpalette``)."""
    from keras_deeplab.training.tensorboard_masks import color_palette

    palette = color_palette(256)
    palette[255] = (224, 224, 192)  # VOC's boundary colour
    return palette.reshape(-1).tolist()


def write_fake_voc(root, num_images=None, image_size=64, num_classes=6, seed=0):
    """Writes ``VOCdevkit/VOC2012`` with JPEGImages, palette SegmentationClass PNGs (object
    boundaries marked 255 as in VOC) and ``ImageSets/Segmentation/{train,val,trainval}.txt``.

    Args:
        root: str. Output root; the tree is ``root/VOCdevkit/VOC2012``.
        num_images: dict split -> count. Defaults to {"train": 8, "val": 4}.
        image_size: int. Defaults to 64.
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
    palette = voc_palette()
    all_ids = []
    for split, count in num_images.items():
        images, masks = _synthetic(split, count, image_size, num_classes, seed)
        ids = []
        for i in range(count):
            name = f"2007_{split}_{i:06d}"
            classes = lut[masks[i, ..., 0]]
            edge = np.zeros(classes.shape, bool)
            edge[1:] |= classes[1:] != classes[:-1]
            edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
            classes = np.where(edge, 255, classes).astype(np.uint8)
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
