"""Custom folders: images and masks matched by file stem.

`images_dir/abc.jpg` pairs with `masks_dir/abc.png`. Files are decoded by
`keras_deeplab.data.decode` (the decoder the Predictor uses too): masks are single-channel class
ids in a lossless format (8- or 16-bit PNG, or palette "P" PNGs read as indices; JPEG bytes are
refused whatever the file is called); grayscale, palette, 16-bit and RGBA images become RGB
(alpha dropped). Listing problems are reported eagerly, before any decoding; per-file problems
(size mismatch, RGB mask, out-of-range values, corrupt files) fail inside the pipeline with a
message naming the file.
"""

import os

import numpy as np
import tensorflow as tf

from keras_deeplab.data import pipeline as _pipeline
from keras_deeplab.data.decode import tf_read_image, tf_read_mask
from keras_deeplab.utils import IGNORE_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTENSIONS = (".png", ".bmp")


def _list_by_stem(directory, extensions, what):
    if not tf.io.gfile.isdir(directory):
        raise FileNotFoundError(
            f"{what} folder {directory!r} does not exist; pass the folder holding the {what} files.")
    found = {}
    for name in sorted(tf.io.gfile.listdir(directory)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions:
            continue
        if stem in found:
            raise ValueError(f"Two {what} files share the stem {stem!r} in {directory!r} "
                             f"({os.path.basename(found[stem])} and {name}); keep one.")
        found[stem] = os.path.join(directory, name)
    if not found:
        raise FileNotFoundError(
            f"No {what} files ({', '.join(extensions)}) in {directory!r}.")
    return found


def _image_size(path):
    """(width, height) from the file header, or None when PIL cannot read it (the decoder
    names such files when the pipeline reaches them)."""
    from PIL import Image

    try:
        with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable header is reported by the decoder
        return None


def check_same_size(paths, batch_size):
    """Raises when whole images of different sizes would be batched together."""
    first = {}
    for path in paths:
        size = _image_size(path)
        if size is not None:
            first.setdefault(size, path)
        if len(first) > 1:
            (a, sa), (b, sb) = list(first.items())[:2]
            raise ValueError(
                f"kd.data.folder(training=False, batch_size={batch_size}) batches whole images, "
                f"but they differ in size: {sa!r} is {a[0]}x{a[1]} and {sb!r} is {b[0]}x{b[1]} "
                "(width x height); pass batch_size=1 to evaluate at full resolution, or "
                "training=True with crop_size=... for fixed-size crops.")


class FolderSource:
    """Pipeline source reading image/mask file pairs matched by stem.

    Args:
        images_dir: str. Folder of RGB images (any tf.io.gfile path).
        masks_dir: str. Folder of single-channel class-id masks.
        num_classes: int. Mask values must be < num_classes or the ignore label.
        value_map: dict or None. Maps raw mask values to class ids (unmapped values become the
            ignore label). Defaults to None (values are class ids).
        ignore_label: int. Defaults to 255.
        invalid_to_ignore: bool. Map out-of-range mask values to the ignore label instead of
            failing. Defaults to False.
    """

    def __init__(self, images_dir, masks_dir, num_classes, value_map=None,
                 ignore_label=IGNORE_LABEL, invalid_to_ignore=False):
        images = _list_by_stem(images_dir, IMAGE_EXTENSIONS, "image")
        masks = _list_by_stem(masks_dir, MASK_EXTENSIONS, "mask")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask:
            raise ValueError(f"{len(no_mask)} image(s) have no mask in {masks_dir!r}, e.g. "
                             f"{images[no_mask[0]]!r}; add the masks or remove the images.")
        if no_image:
            raise ValueError(f"{len(no_image)} mask(s) have no image in {images_dir!r}, e.g. "
                             f"{masks[no_image[0]]!r}; add the images or remove the masks.")
        stems = sorted(images)
        self.image_paths = [images[s] for s in stems]
        self.mask_paths = [masks[s] for s in stems]
        self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)
        self.value_map, self.invalid_to_ignore = value_map, invalid_to_ignore
        self.name = images_dir

    def __len__(self):
        return len(self.image_paths)

    def _decode(self, image_path, mask_path):
        image = tf_read_image(image_path)
        mask = tf_read_mask(mask_path)
        tf.debugging.assert_equal(
            tf.shape(image)[:2], tf.shape(mask)[:2],
            message=tf.strings.join(["image/mask size mismatch: ", image_path, " vs ",
                                     mask_path, "; resize the mask with nearest neighbour"]))
        if self.value_map is not None:
            size = max([256, self.ignore_label + 1] + [int(v) + 1 for v in self.value_map])
            table = np.full(size, self.ignore_label, np.int32)
            for value, cls in self.value_map.items():
                table[int(value)] = int(cls)
            tf.debugging.assert_less(
                tf.reduce_max(mask), size, message=tf.strings.join([
                    "mask ", mask_path, f" holds a value >= {size}, beyond every key of "
                    "value_map; add it to value_map or fix the mask"]))
            mask = tf.gather(tf.constant(table), mask)
        valid = (mask < self.num_classes) | (mask == self.ignore_label)
        if self.invalid_to_ignore:
            mask = tf.where(valid, mask, self.ignore_label)
        else:
            tf.debugging.assert_equal(
                tf.reduce_all(valid), True,
                message=tf.strings.join([
                    "mask ", mask_path, f" holds values that are neither a class id in [0, "
                    f"{self.num_classes}) nor the ignore label {self.ignore_label}; pass "
                    "value_map=... or invalid_to_ignore=True"]))
        return {"images": image, "segmentation_masks": mask}

    def dataset(self):
        ds = tf.data.Dataset.from_tensor_slices((self.image_paths, self.mask_paths))
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)


def folder(images_dir, masks_dir, num_classes, value_map=None, ignore_label=IGNORE_LABEL,
           invalid_to_ignore=False, batch_size=8, training=False, crop_size=None, output="dict",
           augment=None, **pipeline_kwargs):
    """Dataset from a folder of images and a folder of masks matched by file stem.

    Args:
        images_dir, masks_dir, num_classes, value_map, ignore_label, invalid_to_ignore: see
            `FolderSource`.
        batch_size: int. Defaults to 8. In eval mode (``training=False``) whole images are
            batched, so images of different sizes need ``batch_size=1``: a ``ValueError``
            naming two such files says so before any decoding.
        training: bool. Shuffle and augment to `crop_size`. Defaults to False (full resolution).
        crop_size: int or (h, w). Training crop.
        output: str. `"dict"` or `"tuple"`. Defaults to `"dict"`.
        augment: `kd.data.AugmentConfig`, dict or None.
        **pipeline_kwargs: passed to `kd.data.make_pipeline`.

    Example:

    ```python
    ds = kd.data.folder("imgs/", "masks/", num_classes=7, training=True, crop_size=513)
    ```
    """
    source = FolderSource(images_dir, masks_dir, num_classes, value_map, ignore_label,
                          invalid_to_ignore)
    if not training and batch_size > 1:
        check_same_size(source.image_paths, batch_size)
    return _pipeline.make_pipeline(source, batch_size=batch_size, training=training,
                                   crop_size=crop_size, output=output, augment=augment,
                                   **pipeline_kwargs)
