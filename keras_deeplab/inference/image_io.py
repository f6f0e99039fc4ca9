"""Reading images for prediction, with errors that name the file."""

import os

import numpy as np


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def read_image(path):
    """Reads an image file as uint8 RGB (H, W, 3).

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped).

    Raises:
        ImageReadError: the file is missing, not an image, or truncated.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file.")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(img, np.float64)
                arr = arr / max(arr.max(), 1) * 255.0
                return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=-1)
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (unknown format).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e}).") from None


def to_image_array(x):
    """Path, PIL image or array -> (uint8 (H, W, 3) array, source path or None)."""
    if isinstance(x, (str, os.PathLike)):
        return read_image(x), os.fspath(x)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return np.array(x.convert("RGB"), dtype=np.uint8), None
    arr = np.asarray(x)
    if hasattr(x, "numpy"):
        arr = x.numpy()
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an RGB image array (H, W, 3), got shape {arr.shape}.")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                "Image arrays must hold values in [0, 255] (uint8 or float); got range "
                f"[{arr.min()}, {arr.max()}]."
            )
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr, None
