"""Reading images for prediction, with the loaders' decoder and errors that name the file.

Files and PIL images are decoded by `keras_deeplab.data.decode` (the decoder of every dataset
loader), so the Predictor feeds a model exactly the pixels training and evaluation fed it:
8/16-bit, palette, grayscale, RGBA and JPEG inputs alike (the policy table is in that module
and in the README).
"""

import os

import numpy as np

from keras_deeplab.data.decode import DecodeError, pil_to_rgb
from keras_deeplab.data.decode import read_image as _decode_file


class ImageReadError(DecodeError):
    """A file could not be read as an image (a `ValueError`)."""


def read_image(path):
    """Reads an image file as uint8 RGB (H, W, 3), exactly as the dataset loaders do.

    Grayscale, palette and RGBA images become RGB (alpha dropped), 16-bit images keep their
    high byte (``v >> 8``), JPEGs are decoded by PIL (what the loaders use too); see
    `keras_deeplab.data.decode`.

    Raises:
        ImageReadError: the file is missing, not an image, truncated, or a float image.
    """
    path = os.fspath(path)
    try:
        return _decode_file(path)
    except DecodeError as e:
        raise ImageReadError(str(e)) from None


def to_image_array(x):
    """Path, PIL image or array -> (uint8 (H, W, 3) array, source path or None).

    Arrays must hold RGB(A) or grayscale values in [0, 255] (alpha dropped, gray copied to
    three channels, floats rounded).

    Raises:
        ImageReadError: a path that cannot be read.
        ValueError: an array of another shape, values outside [0, 255], or a float array whose
            values all lie in [0, 1] (a [0, 1]-scaled image: multiply it by 255 first; a model
            fed [0, 1] pixels sees a nearly black image and mislabels it).
    """
    if isinstance(x, (str, os.PathLike)):
        return read_image(x), os.fspath(x)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image: the loaders' conversion
        return pil_to_rgb(x), None
    arr = np.asarray(x)
    if hasattr(x, "numpy"):
        arr = x.numpy()
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an RGB image array (H, W, 3), got shape {arr.shape}.")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError("The image array holds NaN or infinite values; pass finite RGB "
                             "values in [0, 255].")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                "Image arrays must hold values in [0, 255] (uint8 or float); got range "
                f"[{arr.min()}, {arr.max()}]"
                + (" (16-bit? the loaders keep the high byte: pass arr >> 8)."
                   if np.issubdtype(arr.dtype, np.integer) else ".")
            )
        if np.issubdtype(arr.dtype, np.floating) and arr.size and 0 < arr.max() <= 1.0:
            raise ValueError(
                f"The float image array has all its values in [0, 1] (max {float(arr.max()):.3g})"
                "; models take RGB in [0, 255], as the loaders give it: pass image * 255 (or the "
                "uint8 image).")
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr, None


