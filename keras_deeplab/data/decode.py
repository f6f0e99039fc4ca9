"""The one decoder of image and mask files, shared by every loader and the Predictor.

Every reader in `keras_deeplab.data` (folder, Cityscapes, VOC, TFRecord) and
`kd.inference.read_image` turn file bytes into pixels through the two functions here, so a
model sees the same pixels in training, evaluation and prediction. Decoding is done by PIL
(Pillow; JPEG through its libjpeg(-turbo) with the default accurate integer IDCT and fancy
upsampling); the tf.data readers call it through `tf.numpy_function` (`tf_read_image`,
`tf_read_mask`). The policy, format by format (also the table in the README):

Images -> uint8 RGB (H, W, 3), values as stored:

| stored as | result |
|---|---|
| 8-bit RGB (PNG, JPEG, BMP, GIF, TIFF, WebP) | as decoded by PIL |
| JPEG (any chroma subsampling), CMYK/YCbCr JPEG | PIL's decoder, then PIL's RGB conversion |
| 8-bit grayscale ("L"), bilevel ("1") | gray value copied to R, G, B |
| palette ("P") | the palette's RGB colours |
| with alpha ("RGBA", "LA", "PA") | alpha dropped (not composited) |
| 16-bit grayscale ("I;16"), 16-bit RGB PNG | high byte, ``v >> 8`` (what PIL does for 16-bit RGB and TensorFlow's `decode_png` for both) |
| 32-bit integer ("I") | as 16-bit when every value is in [0, 65535], else refused |
| float ("F") | refused (no agreed scale) |
| EXIF orientation | not applied (pixels as stored, the order the masks were drawn in) |
| animated (GIF, APNG) | first frame |

Masks -> int32 (H, W) of the stored values; lossless formats only, recognised by their
bytes, never by the file name:

| stored as | result |
|---|---|
| PNG / BMP, 8-bit grayscale ("L") | the values |
| PNG / BMP / GIF palette ("P") | the palette **indices** (never the colours) |
| PNG 16-bit grayscale ("I;16") | the values (0..65535; the readers' value checks then apply) |
| bilevel ("1") | 0 / 1 |
| RGB, RGBA, LA, PA masks | refused: save single-channel class ids |
| JPEG bytes (any file name), unknown bytes, empty or truncated files | refused, naming the file |

Errors are `DecodeError` (a `ValueError`) whose message names the file and the fix; inside
tf.data they surface as `tf.errors.InvalidArgumentError` carrying the same message.
"""

from __future__ import annotations

import io
import os

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_SIGNATURE = b"\xff\xd8\xff"
_IMAGE_SIGNATURES = {
    "PNG": (PNG_SIGNATURE,),
    "JPEG": (JPEG_SIGNATURE,),
    "BMP": (b"BM",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WEBP": (b"RIFF",),
}
#: Lossless formats a mask may be stored in (by signature).
MASK_FORMATS = ("PNG", "BMP", "GIF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class DecodeError(ValueError):
    """A file could not be decoded under the policy of `keras_deeplab.data.decode`."""


def _name(path):
    if path is None:
        return "<bytes>"
    if isinstance(path, (bytes, np.bytes_)):
        return bytes(path).decode("utf-8", "replace")
    return os.fspath(path)


def sniff_format(data):
    """The format named by the first bytes of ``data`` ("PNG", "JPEG", ...), or None."""
    head = bytes(data[:12])
    for fmt, signatures in _IMAGE_SIGNATURES.items():
        if any(head.startswith(s) for s in signatures):
            if fmt == "WEBP" and head[8:12] != b"WEBP":
                continue
            return fmt
    return None


def _check_bytes(data, path, what, allowed):
    name = _name(path)
    if len(data) == 0:
        raise DecodeError(f"{what} file {name} is empty (0 bytes); re-extract or re-download it, "
                          "or remove it from the dataset.")
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError(
            f"{what} file {name} is not a {'/'.join(allowed)} image (corrupt or mislabelled: "
            f"its first bytes are {bytes(data[:8])!r}); re-extract or re-download it, or remove "
            "it from the dataset.")
    if fmt not in allowed:
        if fmt == "JPEG":
            raise DecodeError(
                f"{what} file {name} holds JPEG bytes (whatever its name says): JPEG is lossy and "
                "changes class ids at region edges; save masks losslessly as single-channel PNGs "
                "(L or P mode) from the original annotation.")
        raise DecodeError(f"{what} file {name} is a {fmt} file; {what}s must be "
                          f"{'/'.join(allowed)}; convert it losslessly to PNG.")
    if fmt == "PNG" and not bytes(data[-len(PNG_END):]) == PNG_END:
        raise DecodeError(f"{what} file {name} is a truncated PNG (no IEND chunk at its end); "
                          "re-extract or re-download it, or remove it from the dataset.")
    return fmt


def _open(data, path, what):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise DecodeError(f"{what} file {_name(path)} cannot be decoded ({exc}); the file is "
                          "corrupt or truncated: re-extract or re-download it.") from None
    return img


def _sixteen_bit(img, path, what):
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise DecodeError(f"{what} file {_name(path)} has mode {img.mode} with shape {arr.shape}; "
                          "expected one channel.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DecodeError(
            f"{what} file {_name(path)} is a 32-bit integer image with values in "
            f"[{arr.min()}, {arr.max()}], outside 16 bits; save it as 8- or 16-bit PNG.")
    return arr


def pil_to_rgb(img, path=None):
    """A decoded PIL image -> uint8 RGB (H, W, 3) under the image policy above."""
    if img.mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if img.mode in _SIXTEEN_BIT_MODES:
        gray = (_sixteen_bit(img, path, "image") >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode in ("F",) or img.mode.startswith("F;"):
        raise DecodeError(f"image file {_name(path)} holds floating-point pixels (mode F) with "
                          "no agreed scale; save it as an 8-bit RGB PNG or JPEG.")
    try:
        return np.array(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise DecodeError(f"image file {_name(path)} has mode {img.mode}, which cannot be read "
                          f"as RGB ({exc}); save it as an 8-bit RGB PNG or JPEG.") from None


def decode_image(data, path=None):
    """Image file bytes -> uint8 RGB (H, W, 3), as the policy table above says.

    Args:
        data: bytes of a PNG, JPEG, BMP, GIF, TIFF or WebP file.
        path: str or bytes or None. Named in errors.

    Raises:
        DecodeError: empty, unknown, truncated or undecodable bytes, or a float image.
    """
    _check_bytes(data, path, "image", tuple(_IMAGE_SIGNATURES))
    return pil_to_rgb(_open(data, path, "image"), path)


def decode_mask(data, path=None):
    """Mask file bytes -> int32 (H, W) class values, as the policy table above says.

    Palette ("P") masks give their indices; 16-bit masks their stored values. Only lossless
    formats (PNG, BMP, GIF) are read, recognised by their first bytes.

    Args:
        data: bytes of the mask file.
        path: str or bytes or None. Named in errors.

    Raises:
        DecodeError: not lossless (JPEG bytes under any name), empty, truncated, colour
            (RGB/RGBA/LA/PA) or undecodable.
    """
    _check_bytes(data, path, "mask", MASK_FORMATS)
    img = _open(data, path, "mask")
    if img.mode in ("L", "P", "1"):
        return np.asarray(img).astype(np.int32)
    if img.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit(img, path, "mask").astype(np.int32)
    raise DecodeError(
        f"mask file {_name(path)} is a colour ({img.mode}) image where class indices were "
        "expected (RGB masks are not read as class ids); save masks as single-channel (L or P "
        "mode) PNGs of class ids, e.g. map each colour to its index first.")


def read_image(path):
    """Reads an image file (any `tf.io.gfile` path) with `decode_image`."""
    return decode_image(_read_bytes(path, "image"), path)


def read_mask(path):
    """Reads a mask file (any `tf.io.gfile` path) with `decode_mask`."""
    return decode_mask(_read_bytes(path, "mask"), path)


def _read_bytes(path, what):
    name = _name(path)
    if "://" in name:
        import tensorflow as tf

        if not tf.io.gfile.exists(name):
            raise DecodeError(f"{what} file {name}: no such file.")
        with tf.io.gfile.GFile(name, "rb") as f:
            return f.read()
    if not os.path.isfile(name):
        raise DecodeError(f"{what} file {name}: no such file.")
    with open(name, "rb") as f:
        return f.read()


def _scalar(value):
    return value.item() if isinstance(value, np.ndarray) else value


def _tf_decode(fn, data, path, dtype, shape):
    import tensorflow as tf

    def call(d, p):
        return fn(_scalar(d), _scalar(p))

    out = tf.numpy_function(tf.autograph.experimental.do_not_convert(call), [data, path], dtype,
                            stateful=False)
    out.set_shape(shape)
    return out


def tf_decode_image(data, path):
    """`decode_image` inside a tf.data graph: uint8 (H, W, 3) tensor from a bytes tensor."""
    return _tf_decode(decode_image, data, path, "uint8", [None, None, 3])


def tf_decode_mask(data, path):
    """`decode_mask` inside a tf.data graph: int32 (H, W, 1) tensor from a bytes tensor."""
    return _tf_decode(decode_mask, data, path, "int32", [None, None])[..., None]


def tf_read_image(path):
    """`read_image` inside a tf.data graph: uint8 (H, W, 3) from a path tensor."""
    import tensorflow as tf

    return tf_decode_image(tf.io.read_file(path), path)


def tf_read_mask(path):
    """`read_mask` inside a tf.data graph: int32 (H, W, 1) from a path tensor."""
    import tensorflow as tf

    return tf_decode_mask(tf.io.read_file(path), path)
