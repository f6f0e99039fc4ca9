"""Colour palettes, colour-coded label maps and overlays."""

import numpy as np

IGNORE_LABEL = 255

# Cityscapes train ids 0..18 (cityscapesscripts/helpers/labels.py colours).
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128),  # road
        (244, 35, 232),  # sidewalk
        (70, 70, 70),  # building
        (102, 102, 156),  # wall
        (190, 153, 153),  # fence
        (153, 153, 153),  # pole
        (250, 170, 30),  # traffic light
        (220, 220, 0),  # traffic sign
        (107, 142, 35),  # vegetation
        (152, 251, 152),  # terrain
        (70, 130, 180),  # sky
        (220, 20, 60),  # person
        (255, 0, 0),  # rider
        (0, 0, 142),  # car
        (0, 0, 70),  # truck
        (0, 60, 100),  # bus
        (0, 80, 100),  # train
        (0, 0, 230),  # motorcycle
        (119, 11, 32),  # bicycle
    ],
    dtype=np.uint8,
)


def voc_colormap(n=256):
    """The PASCAL VOC colour map (bit-interleaved label index), (n, 3) uint8."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE = voc_colormap(21)

_NAMED = {
    "cityscapes": (CITYSCAPES_PALETTE, (0, 0, 0)),
    "voc": (VOC_PALETTE, (224, 224, 192)),
    "pascal_voc": (VOC_PALETTE, (224, 224, 192)),
}


def get_palette(palette, num_classes=None):
    """Resolves a palette name or a list of colours to an (N, 3) uint8 array.

    Args:
        palette: `"cityscapes"` (19 colours), `"voc"` (21 colours) or a
            sequence of (r, g, b) triples in [0, 255].
        num_classes: optional int. Raise when the palette has fewer colours.

    Returns:
        (colours, ignore_colour): (N, 3) uint8 array and the (3,) uint8
        colour drawn for the ignore label 255 and any label >= N.
    """
    if isinstance(palette, str):
        key = palette.lower()
        if key not in _NAMED:
            raise ValueError(
                f"Unknown palette {palette!r}; use one of {sorted(_NAMED)} or a list of "
                "(r, g, b) colours."
            )
        colours, ignore = _NAMED[key]
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
        ignore = (0, 0, 0)
        name = "the custom palette"
    if num_classes is not None and len(colours) < num_classes:
        raise ValueError(
            f"{name} has {len(colours)} colours but the model predicts {num_classes} "
            f"classes. Pass palette= a list of at least {num_classes} (r, g, b) colours"
            + (" (or palette='voc' for up to 21 classes)." if num_classes <= 21 else ".")
        )
    return np.asarray(colours, np.uint8), np.asarray(ignore, np.uint8)


def colorize(labels, palette="cityscapes", ignore_color=None):
    """Colour-codes an integer label map.

    Args:
        labels: int array (H, W).
        palette: name or list of colours (see `get_palette`).
        ignore_color: optional (r, g, b) for labels outside the palette
            (e.g. 255). Defaults to the palette's own (black; VOC: cream).

    Returns:
        uint8 array (H, W, 3).
    """
    colours, ignore = get_palette(palette)
    if ignore_color is not None:
        ignore = np.asarray(ignore_color, np.uint8)
    lut = np.tile(ignore, (256, 1)) if len(colours) <= 256 else None
    labels = np.asarray(labels)
    if lut is not None and labels.min(initial=0) >= 0 and labels.max(initial=0) < 256:
        lut[: len(colours)] = colours
        return lut[labels.astype(np.intp)]
    out = np.empty(labels.shape + (3,), np.uint8)
    out[...] = ignore
    valid = (labels >= 0) & (labels < len(colours))
    out[valid] = colours[labels[valid]]
    return out


def overlay(image, color, alpha=0.5):
    """Blends a colour map over an RGB image: `(1 - alpha) * image + alpha * color`.

    Args:
        image: uint8 (H, W, 3).
        color: uint8 (H, W, 3), e.g. from `colorize`.
        alpha: float in [0, 1]. Defaults to 0.5.

    Returns:
        uint8 (H, W, 3).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    image = np.asarray(image, np.float32)
    color = np.asarray(color, np.float32)
    if image.shape != color.shape:
        raise ValueError(f"overlay: image {image.shape} and colour map {color.shape} differ.")
    return np.clip(np.round((1.0 - alpha) * image + alpha * color), 0, 255).astype(np.uint8)
