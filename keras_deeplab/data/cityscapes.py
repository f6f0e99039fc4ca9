"""Cityscapes from its official folders, labelId -> trainId mapped in the graph.

Layout: `root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` and
`root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (or `gtCoarse` with `annotation="coarse"`).
The 34 labelIds map to the 19 trainIds of `cityscapesscripts.helpers.labels` (the table in
`keras_deeplab.data.labels`); everything else becomes the ignore label 255.
"""

import os

import numpy as np
import tensorflow as tf

from keras_deeplab.data import pipeline as _pipeline
from keras_deeplab.data.decode import tf_read_image, tf_read_mask
from keras_deeplab.data.labels import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, CITYSCAPES_NUM_CLASSES
from keras_deeplab.utils import IGNORE_LABEL

NUM_CLASSES = CITYSCAPES_NUM_CLASSES
#: int32 (256,): labelId -> trainId (`keras_deeplab.data.labels`, as int32 for `tf.gather`).
LABEL_ID_TO_TRAIN_ID = CITYSCAPES_LABEL_ID_TO_TRAIN_ID.astype(np.int32)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def label_ids_to_train_ids(label_ids):
    """Maps a tensor of Cityscapes labelIds (0..255) to trainIds (0..18, else 255), in graph."""
    return tf.gather(tf.constant(LABEL_ID_TO_TRAIN_ID), tf.cast(label_ids, tf.int32))


class CityscapesSource:
    """Pipeline source for the Cityscapes folder layout.

    Args:
        root: str. Folder holding `leftImg8bit/` and `gtFine/`.
        split: str. `"train"`, `"val"`, `"test"` or `"train_extra"` (with coarse labels).
        annotation: str. `"fine"` (gtFine) or `"coarse"` (gtCoarse). Defaults to `"fine"`.
        label_type: str. `"labelIds"` (the official files, mapped to trainIds here) or
            `"labelTrainIds"` (files made by cityscapesscripts' `createTrainIdLabelImgs`, read
            as they are). Defaults to `"labelIds"`.
    """

    def __init__(self, root, split, annotation="fine", label_type="labelIds"):
        if annotation not in ("fine", "coarse"):
            raise ValueError(f"annotation must be 'fine' or 'coarse'; got {annotation!r}.")
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"label_type must be 'labelIds' or 'labelTrainIds'; got "
                             f"{label_type!r}.")
        self.label_type = label_type
        if label_type == "labelTrainIds":
            # trainIds already: 0..18 and 255 pass, anything else is an error in _decode
            self.mask_lookup = np.arange(256, dtype=np.int32)
        gt = "gtFine" if annotation == "fine" else "gtCoarse"
        image_root = os.path.join(root, "leftImg8bit", split)
        if not tf.io.gfile.isdir(image_root):
            raise FileNotFoundError(
                f"Cityscapes split folder {image_root!r} does not exist; pass the folder that "
                "holds leftImg8bit/ and gtFine/ and a split among train, val, test.")
        self.image_paths, self.mask_paths = [], []
        for city in sorted(tf.io.gfile.listdir(image_root)):
            city = city.rstrip("/")
            city_dir = os.path.join(image_root, city)
            if city.startswith("."):  # .DS_Store, ._* and other OS metadata
                continue
            if not tf.io.gfile.isdir(city_dir):
                raise ValueError(
                    f"Cityscapes split folder {image_root!r} holds the file {city_dir!r}; a split "
                    "folder holds one folder per city: move or delete that file.")
            for name in sorted(tf.io.gfile.listdir(city_dir)):
                if name.startswith("."):
                    continue
                if not name.lower().endswith("_leftimg8bit.png"):
                    if name.lower().endswith(_IMAGE_SUFFIXES):
                        raise ValueError(
                            f"{os.path.join(city_dir, name)!r} is not named "
                            "<city>_<seq>_<frame>_leftImg8bit.png; Cityscapes images are PNGs "
                            "with that name: rename it or move it out of the split folder.")
                    continue
                stem = name[: -len("_leftImg8bit.png")]
                mask = self._label_file(root, gt, split, city, stem, label_type)
                if mask is None:
                    expected = os.path.join(root, gt, split, city, f"{stem}_{gt}_{label_type}.png")
                    raise FileNotFoundError(
                        f"Image {os.path.join(city_dir, name)!r} has no label file "
                        f"{expected!r}; download {gt} or remove the image" + (
                            " (labelTrainIds files are made by cityscapesscripts' "
                            "createTrainIdLabelImgs)." if label_type == "labelTrainIds" else "."))
                self.image_paths.append(os.path.join(city_dir, name))
                self.mask_paths.append(mask)
        if not self.image_paths:
            raise FileNotFoundError(f"No *_leftImg8bit.png images under {image_root!r}; pass the "
                                    "folder that holds leftImg8bit/ and gtFine/.")
        self.num_classes, self.name = NUM_CLASSES, image_root

    @staticmethod
    def _label_file(root, gt, split, city, stem, label_type):
        base = os.path.join(root, gt, split, city, f"{stem}_{gt}_{label_type}")
        return next((base + ext for ext in (".png", ".PNG") if tf.io.gfile.exists(base + ext)),
                    None)

    def __len__(self):
        return len(self.image_paths)

    def _decode(self, image_path, mask_path):
        image = tf_read_image(image_path)
        raw = tf_read_mask(mask_path)
        tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(raw)[:2], message=tf.strings.join(
            ["image/label size mismatch: ", image_path, " vs ", mask_path, "; use the label "
             "file made for this image (same city, sequence and frame)"]))
        if self.label_type == "labelTrainIds":
            valid = (raw < NUM_CLASSES) | (raw == IGNORE_LABEL)
            tf.debugging.assert_equal(tf.reduce_all(valid), True, message=tf.strings.join(
                ["labelTrainIds file ", mask_path, " holds values other than 0..18 and 255; "
                 "regenerate it with createTrainIdLabelImgs or use label_type='labelIds'"]))
        else:
            tf.debugging.assert_less(tf.reduce_max(raw), 256, message=tf.strings.join(
                ["labelIds file ", mask_path, " holds values above 255, which are not "
                 "Cityscapes labelIds (0..33); use the official *_gtFine_labelIds.png files"]))
        return {"images": image, "segmentation_masks": raw}

    # labelId -> trainId; `kd.data.make_pipeline` applies it after the crop (a 769x769 lookup
    # instead of a 2048x1024 one), `dataset()` applies it at once.
    mask_lookup = LABEL_ID_TO_TRAIN_ID

    def raw_dataset(self):
        """Decoded examples with the masks still in labelIds."""
        ds = tf.data.Dataset.from_tensor_slices((self.image_paths, self.mask_paths))
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def dataset(self):
        """Decoded examples with trainId masks."""
        return self.raw_dataset().map(lambda ex: _pipeline.lookup_masks(ex, self.mask_lookup),
                                      num_parallel_calls=tf.data.AUTOTUNE)


def cityscapes(root, split="train", annotation="fine", batch_size=8, training=None,
               crop_size=769, output="dict", augment=None, label_type="labelIds",
               **pipeline_kwargs):
    """Cityscapes dataset (19 trainId classes, 255 ignored).

    Args:
        root: str. Folder with `leftImg8bit/` and `gtFine/`.
        split: str. Defaults to `"train"`.
        annotation: str. `"fine"` or `"coarse"`. Defaults to `"fine"`.
        batch_size: int. Defaults to 8.
        training: bool or None. Defaults to `split == "train"`; eval keeps 2048x1024.
        crop_size: int or (h, w). Training crop. Defaults to 769.
        output: str. `"dict"` or `"tuple"`.
        augment: `kd.data.AugmentConfig`, dict or None.
        label_type: str. `"labelIds"` or `"labelTrainIds"` (see `CityscapesSource`).
        **pipeline_kwargs: passed to `kd.data.make_pipeline`.

    Example:

    ```python
    train = kd.data.cityscapes("/data/cityscapes", "train", batch_size=8, crop_size=769)
    ```
    """
    training = split == "train" if training is None else training
    return _pipeline.make_pipeline(CityscapesSource(root, split, annotation, label_type),
                                   batch_size=batch_size, training=training,
                                   crop_size=crop_size, output=output, augment=augment,
                                   **pipeline_kwargs)
