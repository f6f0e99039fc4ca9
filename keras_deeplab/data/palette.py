"""Colour palettes for label maps: the one place the package turns class ids into colours.

Used by the Predictor (`kd.inference.PredictionResult.color`), the TensorBoard mask panels
(`kd.callbacks.TensorBoardMasks`), the demo's figures and the fake VOC trees' palette PNGs.

Palettes:
    ``"cityscapes"``: the 19 trainId colours of ``cityscapesscripts/helpers/labels.py``, in
    the class order of `keras_deeplab.data.labels.CITYSCAPES_LABELS`.
    ``"voc"`` / ``"pascal_voc"``: the PASCAL VOC devkit colour map (``VOCdevkit/VOCcode/
    VOClabelcolormap.m``: the bits of the class id spread over R, G, B from the most
    significant bit down) for the 21 classes of `keras_deeplab.data.labels.VOC_CLASSES`.

The ignore label:
    Label 255 (`keras_deeplab.utils.IGNORE_LABEL`), and any label a palette has no colour
    for, is drawn in ONE colour for every palette: `IGNORE_COLOR` = (224, 224, 192), the
    cream the VOC devkit gives index 255 (its "void" boundary colour). It is none of the 19
    Cityscapes colours nor of the 21 VOC colours (black would be VOC's background), and a VOC
    palette PNG written with `pil_palette("voc")` is byte-identical to the devkit's.
"""

import numpy as np

from keras_deeplab.data.labels import CITYSCAPES_COLORS, VOC_NUM_CLASSES
from keras_deeplab.utils import IGNORE_LABEL

#: uint8 (3,): the colour of the ignore label (and of labels outside a palette), all palettes.
IGNORE_COLOR = np.array((224, 224, 192), np.uint8)


def voc_colormap(n=256):
    """The PASCAL VOC devkit colour map (``VOClabelcolormap.m``) for class ids 0..n-1.

    Class id ``c`` has bits ``b0 b1 b2 b3 ...``: bit ``b0`` sets bit 7 of red, ``b1`` bit 7 of
    green, ``b2`` bit 7 of blue, ``b3`` bit 6 of red, and so on.

    Args:
        n: int. Number of colours, 1 to 256. Defaults to 256 (the full devkit map, where
            index 255 is `IGNORE_COLOR`).

    Returns:
        uint8 array (n, 3). E.g. 1 -> (128, 0, 0) aeroplane, 15 -> (192, 128, 128) person.

    Raises:
        ValueError: ``n`` outside [1, 256].
    """
    if not 1 <= int(n) <= 256:
        raise ValueError(f"voc_colormap(n): n must be in [1, 256], got {n!r}.")
    ids = np.arange(int(n))
    cmap = np.zeros((int(n), 3), np.uint8)
    for j in range(8):  # bit j of the id's R/G/B triplets -> bit 7-j of the colour channel
        for channel in range(3):
            cmap[:, channel] |= (((ids >> (3 * j + channel)) & 1) << (7 - j)).astype(np.uint8)
    return cmap


#: uint8 (19, 3): Cityscapes trainId colours (cityscapesscripts).
CITYSCAPES_PALETTE = np.array(CITYSCAPES_COLORS, np.uint8)

#: uint8 (21, 3): PASCAL VOC class colours (devkit colour map, classes 0..20).
VOC_PALETTE = voc_colormap(VOC_NUM_CLASSES)

#: Named palettes accepted by `get_palette` / `colorize` (name -> uint8 (N, 3) colours).
PALETTES = {"cityscapes": CITYSCAPES_PALETTE, "voc": VOC_PALETTE, "pascal_voc": VOC_PALETTE}

for _colours in (CITYSCAPES_PALETTE, VOC_PALETTE):
    _colours.setflags(write=False)


def get_palette(palette, num_classes=None):
    """Resolves a palette name or a list of colours to uint8 colours and the ignore colour.

    Args:
        palette: ``"cityscapes"`` (19 colours), ``"voc"`` / ``"pascal_voc"`` (21 colours) or a
            sequence / array of (r, g, b) triples with values in [0, 255].
        num_classes: optional int. The number of classes the colours must cover.

    Returns:
        ``(colours, ignore_colour)``: uint8 (N, 3) and uint8 (3,) `IGNORE_COLOR`, the colour
        of label 255 and of any label outside [0, N).

    Raises:
        ValueError: unknown name, a custom palette that is not (N, 3) in [0, 255], or fewer
            colours than ``num_classes`` (the message says which palette to pass instead).
    """
    if isinstance(palette, str):
        key = palette.lower()
        if key not in PALETTES:
            raise ValueError(
                f"Unknown palette {palette!r}; use one of {sorted(PALETTES)} or a list of "
                "(r, g, b) colours."
            )
        colours = PALETTES[key]
        name = repr(palette)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or colours.shape[0] == 0:
            raise ValueError(
                f"A custom palette must be a list of (r, g, b) triples; got an array of shape "
                f"{colours.shape}."
            )
        if colours.min() < 0 or colours.max() > 255:
            raise ValueError("Palette colours must be in [0, 255].")
        colours = colours.astype(np.uint8)
        name = "the custom palette"
    if num_classes is not None and len(colours) < num_classes:
        raise ValueError(
            f"{name} has {len(colours)} colours but the model predicts {num_classes} "
            f"classes. Pass palette= a list of at least {num_classes} (r, g, b) colours"
            + (" (or palette='voc' for up to 21 classes)." if num_classes <= 21 else ".")
        )
    return np.asarray(colours, np.uint8), IGNORE_COLOR.copy()


def colorize(labels, palette="cityscapes", ignore_color=None):
    """Colour-codes an integer label map.

    Args:
        labels: integer array (..., H, W), any leading batch dimensions.
        palette: name or list of colours (see `get_palette`). Defaults to "cityscapes".
        ignore_color: optional (r, g, b) for the ignore label 255 and any label outside the
            palette. Defaults to `IGNORE_COLOR` (224, 224, 192).

    Returns:
        uint8 array (..., H, W, 3).
    """
    colours, ignore = get_palette(palette)
    if ignore_color is not None:
        ignore = np.asarray(ignore_color, np.uint8)
    labels = np.asarray(labels)
    if len(colours) <= IGNORE_LABEL + 1 and labels.min(initial=0) >= 0 and \
            labels.max(initial=0) <= IGNORE_LABEL:
        lut = np.tile(ignore, (IGNORE_LABEL + 1, 1))
        lut[: len(colours)] = colours
        lut[IGNORE_LABEL] = ignore
        return lut[labels.astype(np.intp)]
    out = np.empty(labels.shape + (3,), np.uint8)
    out[...] = ignore
    valid = (labels >= 0) & (labels < len(colours)) & (labels != IGNORE_LABEL)
    out[valid] = colours[labels[valid]]
    return out


def overlay(image, color, alpha=0.5):
    """Blends a colour map over an RGB image: ``(1 - alpha) * image + alpha * color``, rounded.

    Args:
        image: uint8 (H, W, 3).
        color: uint8 (H, W, 3), e.g. from `colorize`.
        alpha: float in [0, 1]. Defaults to 0.5.

    Returns:
        uint8 (H, W, 3).

    Raises:
        ValueError: ``alpha`` outside [0, 1] or shapes that differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    image = np.asarray(image, np.float32)
    color = np.asarray(color, np.float32)
    if image.shape != color.shape:
        raise ValueError(f"overlay: image {image.shape} and colour map {color.shape} differ.")
    return np.clip(np.round((1.0 - alpha) * image + alpha * color), 0, 255).astype(np.uint8)


def pil_palette(palette="voc"):
    """A palette as the flat list of 768 ints ``PIL.Image.putpalette`` takes.

    Entries past the palette's colours are `IGNORE_COLOR` (so index 255 is the ignore colour);
    with ``"voc"`` the list equals the VOC devkit's full 256-colour map.

    Args:
        palette: name or list of colours (see `get_palette`). Defaults to "voc".

    Returns:
        list of 768 ints in [0, 255].
    """
    colours, ignore = get_palette(palette)
    if len(colours) > IGNORE_LABEL:
        raise ValueError(f"A PIL palette holds at most {IGNORE_LABEL} class colours plus the "
                         f"ignore colour; got {len(colours)}.")
    if isinstance(palette, str) and palette.lower() in ("voc", "pascal_voc"):
        full = voc_colormap(IGNORE_LABEL + 1)  # the devkit's map; [255] is IGNORE_COLOR
    else:
        full = np.tile(ignore, (IGNORE_LABEL + 1, 1))
        full[: len(colours)] = colours
    return full.reshape(-1).tolist()
