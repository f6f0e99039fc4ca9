"""Colour palettes for label maps: the one place the package turns class ids into colours.

Used by the Predictor (`kd.inference.PredictionResult.color`), the TensorBoard mask panels
(`kd.callbacks.TensorBoardMasks`), the demo's figures and the fake VOC trees' palette PNGs.

Palettes:
    ``"cityscapes"``: the 19 trainId colours of ``cityscapesscripts/helpers/labels.py``, in
    the class order of `keras_deeplab.data.labels.CITYSCAPES_LABELS`.
    ``"voc"`` / ``"pascal_voc"``: the PASCAL VOC devkit colour map (``VOCdevkit/VOCcode/
    VOClabelcolormap.m``: the bits of the class id spread over R, G, B from the most
    significant bit down) for the 21 classes of `keras_deeplab.data.labels.VOC_CLASSES`.
    ``"ade20k"``: the 151 colours of TensorFlow DeepLab's ADE20K colour map
    (tensorflow/models ``research/deeplab/utils/get_dataset_colormap.py``,
    ``create_ade20k_label_colormap``; id 0 "other" is black) for the classes of
    `keras_deeplab.data.labels.ADE20K_CLASSES`. As in the source, a few classes share a colour
    (ids 7 and 49 are both (140, 140, 140)).

    ``"generated"``: a palette for any number of classes, for models of more classes than a
    named palette holds: class ids 0..254 take the VOC devkit colour map (so a 21-class
    "generated" palette is the VOC palette, and every id gets its own colour), ids from 255
    up take colours at golden-angle steps of hue (`generated_palette`).
    A file: a ``.json`` list of ``[r, g, b]`` triples or ``{"colors": [...],
    "class_names": [...]}``, or a text file with one ``r g b [class name]`` line per class
    (`read_palette_file`).

Which palette a model gets by default (`default_palette`, used by ``keras-deeplab
predict``, the Predictor and the TensorBoard mask panels alike): the model's own
``palette`` when it carries one, "cityscapes" for 19 classes, otherwise "generated".

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

#: uint8 (151, 3): ADE20K class colours, TensorFlow DeepLab's ``create_ade20k_label_colormap``.
ADE20K_PALETTE = np.array([
    (0, 0, 0), (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255),
    (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140),
    (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51),
    (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92),
    (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8),
    (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20),
    (0, 163, 255), (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0),
    (255, 224, 0), (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255),
    (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255),
    (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0),
    (255, 0, 20), (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204),
    (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0),
    (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92),
    (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0),
    (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255),
    (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255),
    (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184),
    (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0),
    (92, 0, 255),
], np.uint8)

#: Named palettes accepted by `get_palette` / `colorize` (name -> uint8 (N, 3) colours).
PALETTES = {"cityscapes": CITYSCAPES_PALETTE, "voc": VOC_PALETTE, "pascal_voc": VOC_PALETTE,
            "ade20k": ADE20K_PALETTE}

#: The palette that covers any number of classes (see `generated_palette`).
GENERATED = "generated"

for _colours in (CITYSCAPES_PALETTE, VOC_PALETTE, ADE20K_PALETTE):
    _colours.setflags(write=False)


def generated_palette(num_classes):
    """Distinct colours for any number of classes.

    Ids 0..254 take the PASCAL VOC devkit colour map (`voc_colormap`), so ids below 21 get the
    VOC colours and no two of the first 255 ids share a colour; id ``k >= 255`` takes the hue
    ``(k * 0.618034) mod 1`` (golden-angle steps) at saturation 0.65 and value 0.95.
    The ignore label keeps `IGNORE_COLOR`.

    Args:
        num_classes: int >= 1.

    Returns:
        uint8 array (num_classes, 3).

    Raises:
        ValueError: ``num_classes`` < 1.
    """
    import colorsys

    n = int(num_classes)
    if n < 1:
        raise ValueError(f"generated_palette(num_classes): need >= 1 class, got {num_classes!r}.")
    colours = np.zeros((n, 3), np.uint8)
    colours[: min(n, IGNORE_LABEL)] = voc_colormap(IGNORE_LABEL)[: min(n, IGNORE_LABEL)]
    for k in range(IGNORE_LABEL, n):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.95)
        colours[k] = (round(255 * r), round(255 * g), round(255 * b))
    return colours


def read_palette_file(path):
    """Reads a palette file: colours, and class names when the file has them.

    Formats: ``.json`` holding a list of ``[r, g, b]`` triples or an object
    ``{"colors": [[r, g, b], ...], "class_names": [...]}`` (class names optional); any
    other file is text with one class per line, ``r g b`` or ``r,g,b`` then an optional
    class name (blank lines and lines starting with ``#`` are skipped).

    Args:
        path: str. The file.

    Returns:
        ``(colours, class_names)``: uint8 (N, 3) and a list of N str, or None.

    Raises:
        ValueError: a line or entry that is not three integers in [0, 255] (names the file
            and the line), class names of another length than the colours, an empty file.
    """
    import json

    if path.lower().endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        names = None
        if isinstance(data, dict):
            names = data.get("class_names")
            data = data.get("colors", data.get("colours"))
        entries = [(i + 1, c) for i, c in enumerate(data or [])]
    else:
        entries, names = [], []
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.replace(",", " ").split(None, 3)
                entries.append((number, parts[:3]))
                names.append(parts[3].strip() if len(parts) > 3 else None)
        names = names if names and all(n is not None for n in names) else None
    colours = []
    for number, entry in entries:
        try:
            rgb = [int(v) for v in entry]
        except (TypeError, ValueError):
            rgb = []
        if len(rgb) != 3 or min(rgb) < 0 or max(rgb) > 255:
            raise ValueError(f"{path}: entry {number} ({entry!r}) is not three integers "
                             "r g b in [0, 255].")
        colours.append(rgb)
    if not colours:
        raise ValueError(f"{path} holds no colours; write one 'r g b [name]' line per class.")
    if names is not None and len(names) != len(colours):
        raise ValueError(f"{path}: {len(names)} class names for {len(colours)} colours.")
    return np.asarray(colours, np.uint8), (list(map(str, names)) if names else None)


def default_palette(num_classes=None, model=None):
    """The palette a model's predictions are drawn with when none is given.

    The model's ``palette`` attribute when it has one (`SegmentationModel.palette`), else
    "cityscapes" for 19 classes, else "generated" (VOC colours for 21 classes, distinct
    colours for any count). `kd.inference.Predictor`, ``keras-deeplab predict`` and
    `kd.callbacks.TensorBoardMasks` all use it, so one model is drawn in one set of colours.

    Args:
        num_classes: int or None. Classes the model predicts.
        model: object or None. A model that may carry a ``palette``.

    Returns:
        A palette for `get_palette`: a name or a list of colours.
    """
    own = getattr(model, "palette", None) if model is not None else None
    if own is not None and not callable(own):
        return own
    return "cityscapes" if num_classes == len(CITYSCAPES_PALETTE) else GENERATED


def get_palette(palette, num_classes=None):
    """Resolves a palette name or a list of colours to uint8 colours and the ignore colour.

    Args:
        palette: ``"cityscapes"`` (19 colours), ``"voc"`` / ``"pascal_voc"`` (21 colours),
            ``"ade20k"`` (151 colours), ``"generated"`` (``num_classes`` colours, 255 without
            it; `generated_palette`),
            the path of a palette file (`read_palette_file`) or a sequence / array of
            (r, g, b) triples with values in [0, 255].
        num_classes: optional int. The number of classes the colours must cover.

    Returns:
        ``(colours, ignore_colour)``: uint8 (N, 3) and uint8 (3,) `IGNORE_COLOR`, the colour
        of label 255 and of any label outside [0, N).

    Raises:
        ValueError: unknown name, a custom palette that is not (N, 3) in [0, 255], or fewer
            colours than ``num_classes`` (the message says which palette to pass instead).
    """
    import os

    if isinstance(palette, str) and palette.lower() == GENERATED:
        colours = generated_palette(num_classes or IGNORE_LABEL)
        name = repr(palette)
    elif isinstance(palette, str) and palette.lower() not in PALETTES and os.path.isfile(palette):
        colours, _ = read_palette_file(palette)
        name = f"the palette file {palette}"
    elif isinstance(palette, str):
        key = palette.lower()
        if key not in PALETTES:
            raise ValueError(
                f"Unknown palette {palette!r}: use one of {sorted(PALETTES) + [GENERATED]}, a "
                "palette file (.json or 'r g b [name]' lines) or a list of (r, g, b) colours."
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
            f"Palette {name} has {len(colours)} colours but the model predicts {num_classes} "
            f"classes: use the palette 'generated' (any number of classes), a palette file or "
            f"a list of at least {num_classes} (r, g, b) colours."
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
    labels = np.asarray(labels)
    count = None
    if isinstance(palette, str) and palette.lower() == GENERATED:
        valid = labels[labels != IGNORE_LABEL]
        count = max(int(valid.max(initial=0)) + 1, 1)
    colours, ignore = get_palette(palette, count)
    if ignore_color is not None:
        ignore = np.asarray(ignore_color, np.uint8)
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


def class_labels(num_classes, class_names=None):
    """Display names of classes: ``class_names`` when given (checked against
    ``num_classes``), else ``"class 0"``, ``"class 1"`` ...

    Raises:
        ValueError: ``class_names`` of another length than ``num_classes``.
    """
    if class_names is None:
        return [f"class {i}" for i in range(int(num_classes))]
    names = [str(n) for n in class_names]
    if len(names) != int(num_classes):
        raise ValueError(f"{len(names)} class names for a model of {num_classes} classes.")
    return names


def legend(class_names, palette, counts=None, height=None, width=220, row=18):
    """A legend panel: one colour swatch and class name per row.

    Args:
        class_names: list of str, one per class id (`class_labels`).
        palette: a palette for `get_palette` (at least one colour per class).
        counts: optional int array (num_classes,): pixels per class. When given, only the
            classes with pixels are listed, most pixels first, with their share in percent.
        height: int or None. Panel height in pixels (rows that do not fit are summarised as
            "+N more"); None: tall enough for every row.
        width: int. Panel width in pixels. Defaults to 220.
        row: int. Row height in pixels. Defaults to 18.

    Returns:
        uint8 (height, width, 3), white background, PIL's default font.
    """
    from PIL import Image, ImageDraw

    colours, _ = get_palette(palette, len(class_names))
    ids = list(range(len(class_names)))
    if counts is not None:
        counts = np.asarray(counts, np.int64)
        total = max(int(counts.sum()), 1)
        ids = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    rows = len(ids)
    if height is None:
        height = max(row * rows + 8, row + 8)
    fits = max((int(height) - 8) // row, 1)
    shown = ids if rows <= fits else ids[: fits - 1]
    panel = Image.new("RGB", (int(width), int(height)), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for k, i in enumerate(shown):
        y = 4 + k * row
        draw.rectangle([4, y + 2, 4 + row - 4, y + row - 2], fill=tuple(int(c) for c in colours[i]),
                       outline=(0, 0, 0))
        text = class_names[i] if class_names[i] == f"class {i}" else f"{i} {class_names[i]}"
        if counts is not None:
            text += f" {100.0 * counts[i] / total:.1f}%"
        draw.text((row + 6, y + 3), text, fill=(0, 0, 0))
    if len(shown) < rows:
        draw.text((row + 6, 4 + len(shown) * row + 3), f"+{rows - len(shown)} more",
                  fill=(0, 0, 0))
    return np.asarray(panel, np.uint8)
