"""The result of one prediction."""

import dataclasses
import os

import numpy as np

from keras_deeplab.data.palette import class_labels, colorize, get_palette, legend, pil_palette
from keras_deeplab.data.palette import overlay as blend
from keras_deeplab.utils import IGNORE_LABEL

#: Everything `PredictionResult.save` can write.
OUTPUTS = ("labels", "color", "overlay", "legend", "probabilities")


@dataclasses.dataclass
class PredictionResult:
    """Labels, probabilities and visualisations for one image.

    Args:
        image: uint8 (H, W, 3). The input image.
        labels: int32 (H, W). Argmax class per pixel.
        probabilities: float32 (H, W, C). Class probabilities (after the CRF
            when one was used).
        palette: palette name, file or list of colours for `color()` (see
            `keras_deeplab.data.palette.get_palette`).
        source: str or None. The file the image came from.
        crf: bool. Whether the probabilities were refined by a dense CRF.
        overlay_alpha: float. Default opacity of `overlay()`.
        class_names: list of str or None. One name per class, for the legend; None:
            "class 0", "class 1" ...

    Example:

    ```python
    result = pred.predict("street.png")
    result.labels.shape, result.probabilities.shape
    result.save("out/")   # street_labels.png, _color.png, _overlay.png, _legend.png
    ```
    """

    image: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    palette: object = "cityscapes"
    source: str = None
    crf: bool = False
    overlay_alpha: float = 0.5
    class_names: list = None

    def color(self):
        """Colour-coded labels, uint8 (H, W, 3)."""
        if isinstance(self.palette, str) and self.palette.lower() == "generated":
            return colorize(self.labels, get_palette(self.palette,
                                                     self.probabilities.shape[-1])[0])
        return colorize(self.labels, self.palette)

    def overlay(self, alpha=None):
        """Colour map blended over the image, uint8 (H, W, 3)."""
        return blend(self.image, self.color(), self.overlay_alpha if alpha is None else alpha)

    def legend(self):
        """The overlay with a side panel listing the classes present (colour, id, name,
        share of pixels, most pixels first), uint8 (max(H, panel rows), W + 220, 3); the
        overlay is padded with white below when the list is taller than the image."""
        num_classes = self.probabilities.shape[-1]
        labels = self.labels[(self.labels >= 0) & (self.labels < num_classes)]
        counts = np.bincount(labels.ravel(), minlength=num_classes)
        panel = legend(class_labels(num_classes, self.class_names), self.palette, counts=counts)
        image = self.overlay()
        height = max(image.shape[0], panel.shape[0])
        out = np.full((height, image.shape[1] + panel.shape[1], 3), 255, np.uint8)
        out[: image.shape[0], : image.shape[1]] = image
        out[: panel.shape[0], image.shape[1]:] = panel
        return out

    def save(self, out_dir, stem=None, outputs=("labels", "color", "overlay", "legend")):
        """Writes PNGs (and `probabilities` as .npy) to `out_dir`.

        Args:
            out_dir: str. Created if missing.
            stem: str. File name stem; defaults to the source file's stem.
            outputs: subset of `OUTPUTS`. ``labels``: the class ids as a palette ("P" mode)
                PNG: its pixel values are the ids (``np.asarray(Image.open(path))``) and
                viewers show the palette's colours (8-bit; up to 255 classes, ignore 255);
                a 16-bit grey PNG of the ids for models of more classes. ``legend``: the
                overlay with a side panel of the classes present (`legend`).

        Returns:
            dict mapping each output to the path written.
        """
        from PIL import Image

        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f"Unknown outputs {sorted(unknown)}; expected some of {OUTPUTS}.")
        if stem is None:
            if self.source is None:
                raise ValueError("save() needs a stem for images that did not come from a file.")
            stem = os.path.splitext(os.path.basename(self.source))[0]
        os.makedirs(out_dir, exist_ok=True)
        written = {}
        if "labels" in outputs:
            p = os.path.join(out_dir, f"{stem}_labels.png")
            num_classes = self.probabilities.shape[-1]
            if num_classes <= IGNORE_LABEL and self.labels.max(initial=0) <= IGNORE_LABEL:
                colours, _ = get_palette(self.palette, num_classes)
                image = Image.fromarray(self.labels.astype(np.uint8), mode="P")
                image.putpalette(pil_palette(colours[:IGNORE_LABEL]))
                image.save(p)
            else:
                Image.fromarray(self.labels.astype(np.uint16)).save(p)
            written["labels"] = p
        for name, draw in (("color", self.color), ("overlay", self.overlay),
                           ("legend", self.legend)):
            if name in outputs:
                p = os.path.join(out_dir, f"{stem}_{name}.png")
                Image.fromarray(draw()).save(p)
                written[name] = p
        if "probabilities" in outputs:
            p = os.path.join(out_dir, f"{stem}_probabilities.npy")
            np.save(p, self.probabilities.astype(np.float32))
            written["probabilities"] = p
        return written
