"""The result of one prediction."""

import dataclasses
import os

import numpy as np

from keras_deeplab.data.palette import colorize
from keras_deeplab.data.palette import overlay as blend


@dataclasses.dataclass
class PredictionResult:
    """Labels, probabilities and visualisations for one image.

    Args:
        image: uint8 (H, W, 3). The input image.
        labels: int32 (H, W). Argmax class per pixel.
        probabilities: float32 (H, W, C). Class probabilities (after the CRF
            when one was used).
        palette: palette name or list of colours for `color()`.
        source: str or None. The file the image came from.
        crf: bool. Whether the probabilities were refined by a dense CRF.
        overlay_alpha: float. Default opacity of `overlay()`.

    Example:

    ```python
    result = pred.predict("street.png")
    result.labels.shape, result.probabilities.shape
    result.save("out/")   # street_labels.png, street_color.png, street_overlay.png
    ```
    """

    image: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    palette: object = "cityscapes"
    source: str = None
    crf: bool = False
    overlay_alpha: float = 0.5

    def color(self):
        """Colour-coded labels, uint8 (H, W, 3)."""
        return colorize(self.labels, self.palette)

    def overlay(self, alpha=None):
        """Colour map blended over the image, uint8 (H, W, 3)."""
        return blend(self.image, self.color(), self.overlay_alpha if alpha is None else alpha)

    def save(self, out_dir, stem=None, outputs=("labels", "color", "overlay")):
        """Writes PNGs (and `probabilities` as .npy) to `out_dir`.

        Args:
            out_dir: str. Created if missing.
            stem: str. File name stem; defaults to the source file's stem.
            outputs: subset of `("labels", "color", "overlay", "probabilities")`.
                `labels` is a single-channel PNG of class ids (8-bit, 16-bit
                above 256 classes).

        Returns:
            dict mapping each output to the path written.
        """
        from PIL import Image

        unknown = set(outputs) - {"labels", "color", "overlay", "probabilities"}
        if unknown:
            raise ValueError(f"Unknown outputs {sorted(unknown)}.")
        if stem is None:
            if self.source is None:
                raise ValueError("save() needs a stem for images that did not come from a file.")
            stem = os.path.splitext(os.path.basename(self.source))[0]
        os.makedirs(out_dir, exist_ok=True)
        written = {}
        if "labels" in outputs:
            p = os.path.join(out_dir, f"{stem}_labels.png")
            if self.labels.max(initial=0) < 256:
                Image.fromarray(self.labels.astype(np.uint8)).save(p)
            else:
                Image.fromarray(self.labels.astype(np.uint16)).save(p)
            written["labels"] = p
        if "color" in outputs:
            p = os.path.join(out_dir, f"{stem}_color.png")
            Image.fromarray(self.color()).save(p)
            written["color"] = p
        if "overlay" in outputs:
            p = os.path.join(out_dir, f"{stem}_overlay.png")
            Image.fromarray(self.overlay()).save(p)
            written["overlay"] = p
        if "probabilities" in outputs:
            p = os.path.join(out_dir, f"{stem}_probabilities.npy")
            np.save(p, self.probabilities.astype(np.float32))
            written["probabilities"] = p
        return written
