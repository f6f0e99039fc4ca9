"""PASCAL VOC 2012 segmentation, optionally with the SBD augmented set (`train_aug`).

Layout: `VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`. Masks are
palette ("P" mode) PNGs and are read as **indices**, never as RGB, so the boundary value 255 is
kept as the ignore label. `train_aug` is SBD train + val + VOC train minus VOC val (10,582 on the
real data); its masks come from `SegmentationClassAug/` (next to the VOC folders or under
`sbd_root`) or, if those PNGs are absent, from SBD's `cls/*.mat` files (needs scipy).
"""

import os

import numpy as np
import tensorflow as tf

from keras_deeplab.data import pipeline as _pipeline
from keras_deeplab.data.decode import read_mask, tf_read_image
from keras_deeplab.data.labels import VOC_NUM_CLASSES
from keras_deeplab.utils import IGNORE_LABEL

NUM_CLASSES = VOC_NUM_CLASSES


def _read_list(path):
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Split list {path!r} does not exist; check the dataset root.")
    with tf.io.gfile.GFile(path) as f:
        lines = f.read().splitlines()
    ids = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line.split()) != 1:
            raise ValueError(f"Split list {path!r}, line {number}: {line!r} is not one image id "
                             "(VOC ids have no spaces); write one id per line, e.g. 2007_000032.")
        ids.append(line.strip())
    if not ids:
        raise ValueError(f"Split list {path!r} is empty; list one image id per line (e.g. "
                         "2007_000032) or re-extract the dataset.")
    return ids


def _voc_dir(root):
    voc = os.path.join(root, "VOC2012")
    if tf.io.gfile.isdir(voc):
        return voc
    if tf.io.gfile.isdir(os.path.join(root, "JPEGImages")):
        return root
    raise FileNotFoundError(f"{root!r} holds neither VOC2012/ nor JPEGImages/; pass the "
                            "VOCdevkit folder.")


def train_aug_ids(voc_root, sbd_root):
    """(SBD train + SBD val + VOC train) minus VOC val, sorted (the DeepLab `train_aug` list)."""
    voc = _voc_dir(voc_root)
    val = set(_read_list(os.path.join(voc, "ImageSets", "Segmentation", "val.txt")))
    sbd = set(_read_list(os.path.join(sbd_root, "train.txt")))
    sbd |= set(_read_list(os.path.join(sbd_root, "val.txt")))
    voc_train = set(_read_list(os.path.join(voc, "ImageSets", "Segmentation", "train.txt")))
    return sorted((sbd | voc_train) - val)


def _read_mask_file(path):
    path = path.decode() if isinstance(path, bytes) else path
    if path.endswith(".mat"):
        import scipy.io

        mat = scipy.io.loadmat(path)
        seg = mat["GTcls"]["Segmentation"]
        while seg.dtype == object:  # unwrap MATLAB struct/cell nesting
            seg = seg.ravel()[0]
        return np.asarray(seg, np.uint8)
    mask = read_mask(path)  # keras_deeplab.data.decode: palette indices, never RGB
    if mask.size and mask.max() > 255:
        raise ValueError(f"mask file {path} holds values above 255; VOC masks are 8-bit "
                         "palette PNGs of class indices 0..20 and 255.")
    return mask.astype(np.uint8)


class PascalVOCSource:
    """Pipeline source for VOC 2012 (+SBD).

    Args:
        root: str. The `VOCdevkit` folder (or `VOC2012` itself).
        split: str. `"train"`, `"val"`, `"trainval"` or `"train_aug"`.
        sbd_root: str or None. SBD `dataset/` folder (`train.txt`, `val.txt`, `cls/`); needed
            for `train_aug`.
    """

    def __init__(self, root, split="train", sbd_root=None):
        voc = _voc_dir(root)
        if split == "train_aug":
            if sbd_root is None:
                raise ValueError("split='train_aug' needs sbd_root=... (the SBD dataset folder).")
            ids = train_aug_ids(root, sbd_root)
        else:
            ids = _read_list(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"))
        self.image_paths, self.mask_paths = [], []
        aug_dirs = [os.path.join(voc, "SegmentationClassAug")]
        if sbd_root:
            aug_dirs.append(os.path.join(sbd_root, "SegmentationClassAug"))
        for i in ids:
            image = os.path.join(voc, "JPEGImages", f"{i}.jpg")
            candidates = [os.path.join(voc, "SegmentationClass", f"{i}.png")]
            if split == "train_aug":
                candidates = [os.path.join(d, f"{i}.png") for d in aug_dirs] + candidates
                candidates.append(os.path.join(sbd_root, "cls", f"{i}.mat"))
            mask = next((c for c in candidates if tf.io.gfile.exists(c)), None)
            if not tf.io.gfile.exists(image):
                raise FileNotFoundError(f"Image {image!r} listed in split {split!r} is missing.")
            if mask is None:
                raise FileNotFoundError(f"No mask for {i!r}; looked for {candidates}.")
            self.image_paths.append(image)
            self.mask_paths.append(mask)
        self.num_classes, self.name = NUM_CLASSES, f"{voc}:{split}"

    def __len__(self):
        return len(self.image_paths)

    def _decode(self, image_path, mask_path):
        image = tf_read_image(image_path)
        mask = tf.numpy_function(_read_mask_file, [mask_path], tf.uint8, stateful=False)
        mask.set_shape([None, None])
        mask = mask[..., None]
        tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(mask)[:2], message=tf.strings.join(
            ["image/mask size mismatch: ", image_path, " vs ", mask_path]))
        mask = tf.cast(mask, tf.int32)
        valid = (mask < NUM_CLASSES) | (mask == IGNORE_LABEL)
        tf.debugging.assert_equal(tf.reduce_all(valid), True, message=tf.strings.join(
            ["mask ", mask_path, " holds values outside 0..20 and 255; VOC masks are palette "
             "PNGs of class indices (boundaries 255)"]))
        return {"images": image, "segmentation_masks": mask}

    def dataset(self):
        ds = tf.data.Dataset.from_tensor_slices((self.image_paths, self.mask_paths))
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)


def pascal_voc(root, split="train", sbd_root=None, batch_size=8, training=None, crop_size=513,
               output="dict", augment=None, **pipeline_kwargs):
    """PASCAL VOC 2012 segmentation (21 classes, boundaries 255).

    Args:
        root: str. The VOCdevkit folder.
        split: str. `"train"`, `"val"`, `"trainval"` or `"train_aug"`. Defaults to `"train"`.
        sbd_root: str or None. SBD folder, for `train_aug`.
        batch_size: int. Defaults to 8 (eval mode keeps full resolution: use 1).
        training: bool or None. Defaults to `split` starting with `"train"`.
        crop_size: int or (h, w). Defaults to 513.
        output, augment, **pipeline_kwargs: see `kd.data.make_pipeline`.

    Example:

    ```python
    voc = kd.data.pascal_voc("/data/VOCdevkit", "train_aug", sbd_root="/data/SBD/dataset")
    ```
    """
    training = split.startswith("train") if training is None else training
    return _pipeline.make_pipeline(PascalVOCSource(root, split, sbd_root),
                                   batch_size=batch_size, training=training,
                                   crop_size=crop_size, output=output, augment=augment,
                                   **pipeline_kwargs)
