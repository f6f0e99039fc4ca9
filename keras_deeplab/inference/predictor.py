"""One predictor for Keras, SavedModel and TFLite segmentation models."""

import os
import warnings

import numpy as np

from keras_deeplab.data.palette import default_palette, get_palette
from keras_deeplab.inference.engine import PredictionEngine
from keras_deeplab.inference.image_io import ImageReadError, read_image, to_image_array
from keras_deeplab.inference.result import PredictionResult


class Predictor:
    """Semantic segmentation of image files or arrays, with optional dense CRF.

    Runs a `keras.Model`, a `.keras` file, a SavedModel directory (from
    `kd.export.saved_model` or `model.export`) or a `.tflite` file (LiteRT
    interpreter) behind one interface. Probabilities come from
    `keras_deeplab.inference.engine.PredictionEngine`, the engine `kd.training.evaluate`
    uses too, so the same settings give the labels evaluation scored.

    Size handling (see the engine for the details):

    - `input_size=(h, w)`, or a TFLite/SavedModel with a fixed input size (and no
      sliding window): the image is resized bilinearly to that size and the
      probabilities resized back to the image size. This does not keep the aspect
      ratio: for a fixed-size model a `UserWarning` says so for every image whose
      aspect differs (by over 1 %); `sliding_window=` the model's size tiles instead.
    - `sliding_window=(h, w)`: each view is tiled with overlapping windows
      (stride `ceil(window * (1 - overlap))`, last window aligned with the end) whose
      softmax probabilities are averaged. A view smaller than the window is one
      window of its own size; a fixed-size model gets it padded (symmetric
      reflection) and the output cropped back. With a fixed-size TFLite model the
      window must be its input size.
    - `scales` / `flip`: views at several scales and mirrored, probabilities averaged.
    - otherwise the model runs on the image as it is.

    Args:
        model: keras.Model or str path (`.keras`, SavedModel dir, `.tflite`).
        crf: `kd.inference.DenseCRF` or None. Refines the probabilities at
            the image resolution. Defaults to None.
        input_size: int, (height, width) or None. Defaults to None.
        sliding_window: int, (height, width) or None. Defaults to None.
        overlap: float in [0, 1). Sliding-window overlap fraction. Defaults to 1/3.
        palette: `"cityscapes"`, `"voc"`, `"generated"`, a palette file or a list of
            (r, g, b) colours, at least one per class. Defaults to None: the model's own
            (`model.palette`), else `keras_deeplab.data.palette.default_palette` of its
            class count (the TensorBoard mask panels use the same rule).
        class_names: list of str or None. Class names for legends; None: the model's
            `class_names` when it has them (else "class 0", "class 1" ...).
        overlay_alpha: float. Colour-map opacity in overlays. Defaults to 0.5.
        num_threads: int or None. TFLite interpreter threads. Defaults to None.
        scales: sequence of float > 0. Test scales (multi-scale inference). Defaults
            to (1.0,).
        flip: bool. Also average the left-right mirrored image. Defaults to False.
        output_stride: int or None. Run a Keras model rebuilt at this output stride
            with the same weights (e.g. 8 for a model trained at 16). Raises for
            exported models. Defaults to None.
        batch_size: int. Windows per model call. Defaults to 4.

    Raises:
        ValueError: settings a fixed-size model cannot take, a palette shorter than
            the number of classes, or an out-of-range setting.

    Example:

    ```python
    pred = kd.inference.Predictor("dlv3p_int8.tflite", crf=kd.inference.DenseCRF())
    labels = pred("street.png")                  # (H, W) int32
    result = pred.predict("street.png")          # labels, probabilities, color(), overlay()
    report = pred.predict_folder("images/", "results/")
    tta = kd.inference.Predictor(model, sliding_window=769, scales=(0.75, 1.0, 1.25),
                                 flip=True, output_stride=8)
    ```
    """

    def __init__(
        self,
        model,
        crf=None,
        input_size=None,
        sliding_window=None,
        overlap=1.0 / 3.0,
        palette=None,
        overlay_alpha=0.5,
        num_threads=None,
        scales=(1.0,),
        flip=False,
        output_stride=None,
        batch_size=4,
        class_names=None,
    ):
        self.engine = PredictionEngine(
            model,
            sliding_window=sliding_window,
            overlap=overlap,
            scales=scales,
            flip=flip,
            output_stride=output_stride,
            input_size=input_size,
            batch_size=batch_size,
            num_threads=num_threads,
        )
        self.runner = self.engine.runner
        self.model_path = None if not isinstance(model, (str, os.PathLike)) else os.fspath(model)
        self.crf = crf
        keras_model = getattr(self.runner, "model", None)
        self.class_names = (class_names if class_names is not None
                            else getattr(keras_model, "class_names", None))
        self._palette_given = palette if palette is not None else getattr(keras_model, "palette",
                                                                          None)
        self.overlay_alpha = float(overlay_alpha)
        self.num_classes = self.engine.num_classes
        self.palette = self._palette_given
        if self.num_classes is not None:
            self.palette = self._resolve_palette()  # fail early on a short palette

    # The engine's settings, read through the predictor.
    input_size = property(lambda self: self.engine.input_size)
    sliding_window = property(lambda self: self.engine.sliding_window)
    overlap = property(lambda self: self.engine.overlap)
    scales = property(lambda self: self.engine.scales)
    flip = property(lambda self: self.engine.flip)
    output_stride = property(lambda self: self.engine.output_stride)

    # -- core -----------------------------------------------------------------

    def logits(self, image):
        """Log-probabilities (H, W, C) float32 of a uint8/float (H, W, 3) image.

        The log of `PredictionEngine.probabilities` (clipped at 1e-30): averaged
        probabilities have no logits, but their softmax is these probabilities again.
        """
        return np.log(np.maximum(self._probabilities(image), np.float32(1e-30)))

    def _probabilities(self, image):
        self._warn_if_squashed(np.shape(image)[:2])
        probs = self.engine.probabilities(np.asarray(image, np.float32)[None])[0]
        if self.num_classes is None:
            self.num_classes = probs.shape[-1]
            self.palette = self._resolve_palette()
        return probs

    def _resolve_palette(self):
        palette = self._palette_given
        if palette is None:
            palette = default_palette(self.num_classes)
        get_palette(palette, self.num_classes)
        return palette

    def _warn_if_squashed(self, size):
        """Warns (once per image size) when a fixed-size model would distort the image."""
        fixed = self.engine.fixed_input_size
        if fixed is None or self.engine.sliding_window is not None or tuple(size) == fixed:
            return
        seen = self.__dict__.setdefault("_squash_warned", set())
        ratio = (size[1] / size[0]) / (fixed[1] / fixed[0])
        if abs(ratio - 1.0) <= 0.01 or tuple(size) in seen:
            return
        seen.add(tuple(size))
        warnings.warn(
            f"The model takes a fixed {fixed[0]}x{fixed[1]} input, so this {size[0]}x{size[1]} "
            f"image is resized to {fixed[0]}x{fixed[1]} WITHOUT keeping its aspect ratio "
            f"(width/height {size[1] / size[0]:.2f} becomes {fixed[1] / fixed[0]:.2f}), which "
            "changes the labels. Pass "
            f"sliding_window={fixed} to tile the image at the model's size (keeps the aspect "
            "ratio), or export the model with input_size=None.", UserWarning, stacklevel=3)

    def _result(self, image, probs, source):
        return PredictionResult(
            image=image,
            labels=probs.argmax(-1).astype(np.int32),
            probabilities=probs,
            palette=self.palette,
            source=source,
            crf=self.crf is not None,
            overlay_alpha=self.overlay_alpha,
            class_names=self.class_names,
        )

    def predict(self, x, crf=True):
        """Predicts one image.

        Args:
            x: path, PIL image or array (H, W, 3) with values in [0, 255] (files and PIL
                images decoded as the dataset loaders decode them; a float array with all
                values in [0, 1] raises ValueError: multiply it by 255).
            crf: bool. Apply the predictor's CRF, if it has one. Defaults to True.

        Returns:
            `PredictionResult` with `labels`, `probabilities`, `color()`,
            `overlay()` and `save()`.
        """
        image, source = to_image_array(x)
        probs = self._probabilities(image)
        if crf and self.crf is not None:
            probs = self.crf.refine(image, probs)
        result = self._result(image, probs, source)
        result.crf = bool(crf and self.crf is not None)
        return result

    def __call__(self, x):
        """Labels (H, W) int32 for one image (path, PIL image or array)."""
        return self.predict(x).labels

    def predict_batch(self, inputs, progress=False):
        """Predicts several images; the CRF runs in a process pool across them.

        Args:
            inputs: sequence of paths / PIL images / arrays.
            progress: bool. tqdm bar over the network passes. Defaults to False.

        Returns:
            list of `PredictionResult`, in order.
        """
        items = list(inputs)
        iterator = items
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(items, desc="predict", unit="img")
        images, probs, sources = [], [], []
        for x in iterator:
            image, source = to_image_array(x)
            images.append(image)
            sources.append(source)
            probs.append(self._probabilities(image))
        if self.crf is not None and images:
            probs = self.crf.refine_batch(images, probs)
        return [self._result(im, p, s) for im, p, s in zip(images, probs, sources)]

    # -- files ------------------------------------------------------------------

    def predict_files(
        self,
        paths,
        out_dir,
        outputs=("labels", "color", "overlay"),
        chunk_size=None,
        progress=True,
    ):
        """Predicts image files and writes the results to `out_dir`.

        Unreadable and non-image files are reported by name (printed and in
        the returned report) and the other files are still processed.

        Args:
            paths: sequence of file paths.
            out_dir: str. Output folder, created if missing.
            outputs: what to write per image, see `PredictionResult.save`.
            chunk_size: int or None. Images decoded and predicted before the
                CRF pool refines them together. Defaults to 2 per CRF worker.
            progress: bool. tqdm progress bar. Defaults to True.

        Returns:
            dict: `{"written": {path: {output: file}}, "failed": {path: reason}}`.
        """
        from tqdm.auto import tqdm

        from keras_deeplab.inference.crf import default_num_workers

        paths = [os.fspath(p) for p in paths]
        if chunk_size is None:
            workers = (self.crf.num_workers or default_num_workers()) if self.crf else 1
            chunk_size = 2 * workers if self.crf is not None else 1
        os.makedirs(out_dir, exist_ok=True)
        report = {"written": {}, "failed": {}}
        stems = {}
        bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
        try:
            for start in range(0, len(paths), chunk_size):
                chunk = paths[start : start + chunk_size]
                images, probs, ok = [], [], []
                for path in chunk:
                    try:
                        image = read_image(path)
                    except ImageReadError as e:
                        report["failed"][path] = str(e)
                        bar.write(f"skipped {path}: {e}")
                        bar.update(1)
                        continue
                    images.append(image)
                    probs.append(self._probabilities(image))
                    ok.append(path)
                if self.crf is not None and images:
                    probs = self.crf.refine_batch(images, probs)
                for path, image, p in zip(ok, images, probs):
                    result = self._result(image, p, path)
                    stem = os.path.splitext(os.path.basename(path))[0]
                    n = stems.get(stem, 0)
                    stems[stem] = n + 1
                    if n:  # same stem from another folder or extension
                        stem = f"{stem}_{n}"
                    report["written"][path] = result.save(out_dir, stem=stem, outputs=outputs)
                    bar.update(1)
        finally:
            bar.close()
        if report["failed"]:
            names = ", ".join(os.path.basename(p) for p in report["failed"])
            print(f"{len(report['failed'])} file(s) could not be read and were skipped: {names}")
        return report

    def predict_folder(
        self,
        in_dir,
        out_dir,
        recursive=False,
        outputs=("labels", "color", "overlay"),
        progress=True,
    ):
        """Predicts every file in a folder (see `predict_files`).

        Hidden files are ignored; every other file is tried, so non-image
        files show up by name in the report's `failed` entry.
        """
        if not os.path.isdir(in_dir):
            raise NotADirectoryError(f"{in_dir} is not a folder.")
        paths = []
        if recursive:
            for root, dirs, files in os.walk(in_dir):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                paths += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        else:
            paths = [
                os.path.join(in_dir, f)
                for f in sorted(os.listdir(in_dir))
                if not f.startswith(".") and os.path.isfile(os.path.join(in_dir, f))
            ]
        return self.predict_files(paths, out_dir, outputs=outputs, progress=progress)
