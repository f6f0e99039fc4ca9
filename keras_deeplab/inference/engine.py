"""The one prediction engine: sliding window, multi-scale, flip and output-stride switch.

Every prediction the package makes goes through `PredictionEngine`: `kd.inference.Predictor`
(and so ``keras-deeplab predict``), `kd.training.evaluate` / `kd.evaluation.evaluate`,
`kd.callbacks.EvaluateMeanIoU` and the Cityscapes results writer. The mIoU a recipe reports is
therefore the mIoU of the labels a user gets from the same model and settings.

What is averaged: **softmax probabilities**, everywhere. DeepLab's research code averages the
softmax of every scale and of the flipped image (``predict_labels_multi_scale`` in
``tensorflow/models/research/deeplab/model.py``: ``tf.nn.softmax`` per view, then
``tf.reduce_mean`` over the views); the overlapping windows of a sliding-window pass are
averaged in the same space, so windows, scales and flips are one kind of view. (DeepLab
resizes each view's logits to the image size before its softmax; here the window-averaged
probabilities are resized, which keeps every interpolated value a probability.)

For a batch of images (B, H, W, 3), float in [0, 255]:

1. The base size is ``input_size`` if given, else the image size (H, W).
2. For each scale ``s``, the images are resized bilinearly to ``round(base * s)`` (at least
   1 pixel) and, with ``flip=True``, also mirrored left-right.
3. Each view gives probabilities at its own size: from one model call, or with
   ``sliding_window`` from overlapping windows averaged where they overlap.
4. Mirrored views are mirrored back; every view is resized bilinearly to (H, W)
   (`keras_deeplab.utils.resize_bilinear`: half-pixel centres, no antialiasing).
5. The result is the mean over the ``len(scales) * (2 if flip else 1)`` views.

Memory: views are summed into one float32 map in place (no list of views), softmax runs over
blocks of pixels (its float64 temporaries are one block's, not a map's), and
`probability_maps` hands over one image at a time, so a caller that needs only labels or
scores (`labels`, `kd.training.evaluate`) never holds the probabilities of a whole batch. With
``sliding_window`` an image's windows are batched together, each window's softmax is added
block by block into the image's sum, and images run one at a time: the engine then holds one
image's probability map (and its window count, 1/C of it) beside one call's window logits;
without it, the maps of the at most ``batch_size`` images of one model call.

Windows: along an axis of length ``L`` with window ``w`` the starts are
``0, stride, 2 * stride, ...`` with ``stride = ceil(w * (1 - overlap))`` (`window_starts`),
and the last window is aligned with the end (start ``L - w``), so every pixel is covered and
no window leaves the view. A view smaller than the window is covered by one window of the
view's own size. A runner with a fixed input size (a TFLite or SavedModel exported with
``input_size=(h, w)``) gets every smaller input padded to its size by symmetric reflection,
and its output cropped back (pad, run, crop).

A *runner* is any callable mapping float32 images (n, h, w, 3) in [0, 255] to float32 logits
(n, h, w, C) (log-probabilities work too: the softmax is the same), optionally with
``fixed_input_size`` ((h, w) or None), ``num_classes``, ``kind`` and ``path`` attributes; see
`keras_deeplab.inference.runners`. A `keras.Model` or a model path is wrapped in one.
"""

from __future__ import annotations

import math
import os

import numpy as np

from keras_deeplab.np_metrics import softmax
from keras_deeplab.utils import as_pair, resize_bilinear

#: Elements per softmax block: float64 temporaries of 2 MiB each instead of 2x a whole map
#: (262144: also faster than a whole-map softmax, 0.28 s vs 0.45 s at 1024x2048x19).
_SOFTMAX_BLOCK = 1 << 18

#: Tolerance of the stride's ceiling: ``30 * (1 - 1/3)`` is 20.000000000000004 in floats.
_STRIDE_EPS = 1e-9


def window_stride(window, overlap):
    """Distance between the starts of neighbouring windows: ``ceil(window * (1 - overlap))``.

    Args:
        window: int > 0. Window length in pixels.
        overlap: float in [0, 1). Fraction of the window shared by neighbouring windows.

    Returns:
        int >= 1.

    Raises:
        ValueError: ``overlap`` outside [0, 1) or ``window`` < 1.
    """
    _check_overlap(overlap)
    if int(window) < 1:
        raise ValueError(f"The sliding window must be at least 1 pixel, got {window}.")
    return max(1, math.ceil(int(window) * (1.0 - float(overlap)) - _STRIDE_EPS))


def window_starts(length, window, overlap=1.0 / 3.0):
    """Start offsets of the windows covering ``[0, length)`` (the package's one tiling rule).

    Starts are ``0, stride, 2 * stride, ...`` below ``length - window`` with
    ``stride = window_stride(window, overlap)``, and the last window starts at
    ``length - window`` (aligned with the end). A length at most the window gives ``[0]``
    (one window, shrunk to the length).

    Args:
        length: int >= 1. Image (or view) length along the axis, in pixels.
        window: int >= 1. Window length in pixels.
        overlap: float in [0, 1). Defaults to 1/3.

    Returns:
        list of int, increasing.

    Example:
    >>> window_starts(70, 32, 1 / 3)  # stride ceil(32 * 2/3) = 22
    [0, 22, 38]
    """
    length, window = int(length), int(window)
    stride = window_stride(window, overlap)
    if length < 1:
        raise ValueError(f"Cannot tile an axis of length {length}.")
    if length <= window:
        return [0]
    last = length - window
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


def _softmax(logits, add_to=None):
    """`np_metrics.softmax` (float64 maths, float32 out) over blocks of pixel rows.

    The same values as ``softmax(logits)`` (every pixel is computed on its own); the float64
    temporaries are those of about ``_SOFTMAX_BLOCK`` elements, not of the whole array.

    Args:
        logits: float array (..., w, C), e.g. (n, h, w, C).
        add_to: None, or a float32 array (h, w, C) of the shape of ``logits`` (h, w, C) (a
            view into an accumulator): the probabilities are added into it block by block,
            and no array of them is made.

    Returns:
        float32 array of the shape of ``logits``, or None with ``add_to``.
    """
    logits = np.asarray(logits, np.float32)
    out = None
    if add_to is None:
        out = np.empty(logits.shape, np.float32)
        src = logits.reshape((-1,) + logits.shape[-2:])
        dst = out.reshape(src.shape)
    else:
        src, dst = logits, add_to
    step = max(1, _SOFTMAX_BLOCK // max(1, src[0].size))
    for start in range(0, len(src), step):
        if out is None:
            dst[start:start + step] += softmax(src[start:start + step])
        else:
            dst[start:start + step] = softmax(src[start:start + step])
    return out


def _check_overlap(overlap):
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")


def _positive_pair(value, name):
    if value is None:
        return None
    pair = as_pair(value, name)
    if min(pair) < 1:
        raise ValueError(f"`{name}` must be positive, got {value!r}.")
    return pair


def as_runner(model, num_threads=None):
    """A runner for ``model``: a keras.Model, a model path or a runner (returned as is).

    Args:
        model: `keras.Model`, str / PathLike (``.keras``, SavedModel directory, ``.tflite``)
            or a callable runner (see the module docstring).
        num_threads: int or None. TFLite interpreter threads. Defaults to None.

    Returns:
        A runner.
    """
    from keras_deeplab.inference.runners import make_runner

    if isinstance(model, (str, os.PathLike)) or hasattr(model, "predict"):
        return make_runner(model, num_threads=num_threads)
    if callable(model):
        return model
    raise TypeError(
        f"Expected a keras.Model, a model path or a runner callable, got {type(model).__name__}.")


def _describe(runner):
    kind = getattr(runner, "kind", None) or type(runner).__name__
    path = getattr(runner, "path", None)
    return f"This {kind} model" + (f" ({path})" if path else "")


def _fixed_size_error(runner, problem, fix):
    fixed = runner.fixed_input_size
    return ValueError(
        f"{_describe(runner)} expects {fixed[0]}x{fixed[1]} (HxW) inputs, fixed at export; "
        f"{problem}. {fix}, or re-export with input_size=None (dynamic size).")


class PredictionEngine:
    """Class probabilities of a segmentation model with tiling and test-time augmentation.

    See the module docstring for the exact order of operations and what is averaged.

    Args:
        model: `keras.Model` (logits, or a ``{"logits", ...}`` dict), a model path
            (``.keras``, SavedModel directory, ``.tflite``) or a runner callable.
        sliding_window: None, int or (height, width). Window size in pixels for
            sliding-window inference at each scale (e.g. 769 for Cityscapes at 2048x1024).
            With a fixed-size model it must be that size. Defaults to None (one call per view).
        overlap: float in [0, 1). Fraction of a window shared with its neighbours.
            Defaults to 1/3.
        scales: sequence of float > 0. Test scales relative to the base size. Defaults to
            (1.0,). DeepLab's multi-scale test uses (0.5, 0.75, 1.0, 1.25, 1.5, 1.75).
        flip: bool. Also average the left-right mirrored views. Defaults to False.
        output_stride: int or None. Run a copy of a Keras model rebuilt at this output stride
            with the same weights (`keras_deeplab.models.presets.with_output_stride`; e.g.
            train at 16, evaluate at 8). Exported models have theirs fixed. Defaults to None.
        input_size: None, int or (height, width). Base size the images are resized to
            (bilinearly) before the scales apply; probabilities come back at the image size.
            Defaults to None (the image size), or the fixed input size of a fixed-size model
            when ``sliding_window`` is None.
        batch_size: int >= 1. Images or windows per model call. Defaults to 4.
        num_threads: int or None. TFLite interpreter threads (model paths only).

    Raises:
        ValueError: a setting out of range; a sliding window or input size that a
            fixed-size model cannot take; ``output_stride`` for a model that is not Keras.

    Example:
    ```python
    engine = kd.inference.PredictionEngine(model, sliding_window=769, scales=(0.75, 1, 1.25),
                                           flip=True, output_stride=8)
    probs = engine.probabilities(images)   # (B, H, W, C) float32, sums to 1 over C
    labels = probs.argmax(-1)
    ```
    """

    def __init__(self, model, sliding_window=None, overlap=1.0 / 3.0, scales=(1.0,),
                 flip=False, output_stride=None, input_size=None, batch_size=4,
                 num_threads=None):
        runner = as_runner(model, num_threads=num_threads)
        self.sliding_window = _positive_pair(sliding_window, "sliding_window")
        _check_overlap(overlap)
        self.overlap = float(overlap)
        scales = tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be a non-empty sequence of positive numbers, got "
                             f"{scales}.")
        self.scales = scales
        self.flip = bool(flip)
        self.input_size = _positive_pair(input_size, "input_size")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.output_stride = None if output_stride is None else int(output_stride)
        if self.output_stride is not None:
            runner = self._at_output_stride(runner, self.output_stride)
        self.runner = runner
        fixed = getattr(runner, "fixed_input_size", None)
        self.fixed_input_size = None if fixed is None else as_pair(fixed, "fixed_input_size")
        fixed = self.fixed_input_size
        if fixed is not None:
            if self.sliding_window is not None and self.sliding_window != fixed:
                raise _fixed_size_error(
                    runner, f"so it cannot run {self.sliding_window[0]}x{self.sliding_window[1]} "
                    f"sliding windows", f"Use sliding_window={fixed}")
            if self.sliding_window is None:
                if self.input_size is not None and self.input_size != fixed:
                    raise _fixed_size_error(
                        runner, f"input_size={self.input_size} cannot be used",
                        f"Pass input_size=None (images are then resized to {fixed[0]}x"
                        f"{fixed[1]})")
                self.input_size = fixed
        self.num_classes = getattr(runner, "num_classes", None)

    @staticmethod
    def _at_output_stride(runner, output_stride):
        from keras_deeplab.inference.runners import KerasRunner

        if not isinstance(runner, KerasRunner):
            raise ValueError(
                f"output_stride={output_stride} needs a Keras model (its dilations are rebuilt "
                f"with the same weights); {_describe(runner)} has its output stride fixed at "
                "export. Export the model at the wanted stride instead.")
        if getattr(runner.model, "output_stride", None) == output_stride:
            return runner
        from keras_deeplab.models.presets import with_output_stride

        return KerasRunner(with_output_stride(runner.model, output_stride))

    # -- model calls ----------------------------------------------------------------------

    def _logits(self, x):
        """Runner logits for (n, h, w, 3); a fixed-size runner gets padded input (pad, crop)."""
        fixed = self.fixed_input_size
        h, w = x.shape[1:3]
        if fixed is None or (h, w) == fixed:
            return np.asarray(self.runner(x), np.float32)
        if h > fixed[0] or w > fixed[1]:
            raise _fixed_size_error(self.runner, f"but a {h}x{w} view was asked for (a scale "
                                    "above 1?)", f"Use sliding_window={fixed}")
        padded = np.pad(x, ((0, 0), (0, fixed[0] - h), (0, fixed[1] - w), (0, 0)),
                        mode="symmetric")
        return np.asarray(self.runner(padded), np.float32)[:, :h, :w]

    def _softmax_of(self, x):
        """Probabilities of a view (n, h, w, 3) from one runner call (n <= batch_size)."""
        return _softmax(self._logits(np.ascontiguousarray(x)))

    def _sliding(self, x):
        """Window-averaged probabilities of a view (1, h, w, 3) of one image.

        Windows go to the runner ``batch_size`` at a time; each window's probabilities are
        added, block by block as they are computed, into one float32 map, which is divided by
        the window count in place.
        """
        _, h, w = x.shape[:3]
        wh, ww = min(self.sliding_window[0], h), min(self.sliding_window[1], w)
        ys = window_starts(h, self.sliding_window[0], self.overlap)
        xs = window_starts(w, self.sliding_window[1], self.overlap)
        count = np.zeros((h, w, 1), np.float32)
        for y in ys:
            for x0 in xs:
                count[y:y + wh, x0:x0 + ww] += 1.0
        items = [(i, y, x0) for y in ys for x0 in xs for i in range(len(x))]
        total = None
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            tiles = np.stack([x[i, y:y + wh, x0:x0 + ww] for i, y, x0 in chunk])
            logits = self._logits(tiles)
            del tiles
            if total is None:
                total = np.zeros((len(x), h, w, logits.shape[-1]), np.float32)
            for j, (i, y, x0) in enumerate(chunk):  # softmax added straight into the sum
                _softmax(logits[j], add_to=total[i, y:y + wh, x0:x0 + ww])
            del logits
        return np.divide(total, count, out=total)

    def _chunk_probabilities(self, images):
        """Mean probabilities over the views of ``images`` (n, H, W, 3), summed in place."""
        height, width = images.shape[1:3]
        total = None
        views = 0
        for size in self.view_sizes((height, width)):
            scaled = resize_bilinear(images, size)
            for flipped in ((False, True) if self.flip else (False,)):
                x = np.ascontiguousarray(scaled[:, :, ::-1]) if flipped else scaled
                probs = self._sliding(x) if self.sliding_window is not None else \
                    self._softmax_of(x)
                del x
                if flipped:
                    probs = probs[:, :, ::-1]
                if probs.shape[1:3] != (height, width):
                    probs = resize_bilinear(np.ascontiguousarray(probs), (height, width))
                if total is None:  # a fresh array of this call: summed into in place
                    total = np.ascontiguousarray(probs)
                else:
                    total += probs
                del probs
                views += 1
            del scaled
        if views > 1:
            np.divide(total, np.float32(views), out=total)
        if self.num_classes is None:
            self.num_classes = int(total.shape[-1])
        return total

    # -- public ---------------------------------------------------------------------------

    def view_sizes(self, image_size):
        """(height, width) of the view at each scale for an image of ``image_size``."""
        base = self.input_size or as_pair(image_size, "image_size")
        return [(max(1, int(round(base[0] * s))), max(1, int(round(base[1] * s))))
                for s in self.scales]

    def _as_batch(self, images):
        images = np.asarray(images, np.float32)
        single = images.ndim == 3
        if single:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) or (H, W, 3) RGB arrays, got shape "
                             f"{images.shape}.")
        return images, single

    def probability_maps(self, images):
        """Class probabilities of a batch, one image at a time (a generator).

        The memory-lean form of `probabilities`: with ``sliding_window`` each image is
        computed on its own (its windows batched together), otherwise ``batch_size`` images
        per model call; only those images' maps are alive at once (drop each map before
        asking for the next to keep it so).

        Args:
            images: float or uint8 array (B, H, W, 3) or (H, W, 3), values in [0, 255].

        Yields:
            float32 NumPy arrays (H, W, C), one per image in order, summing to 1 over C.

        Raises:
            ValueError: images that are not (B, H, W, 3) / (H, W, 3).
        """
        images, _ = self._as_batch(images)
        for chunk in self._chunks(images):
            maps = list(chunk)
            del chunk
            while maps:  # (popped: a suspended generator keeps no reference to a yielded map)
                yield maps.pop(0)

    def _chunks(self, images):
        """Probabilities (n, H, W, C) of consecutive groups of images: one image at a time
        with ``sliding_window``, else ``batch_size`` images (one model call per view)."""
        step = 1 if self.sliding_window is not None else self.batch_size
        for start in range(0, len(images), step):
            yield self._chunk_probabilities(images[start:start + step])  # (held by no local)

    def probabilities(self, images):
        """Class probabilities of a batch of images.

        Args:
            images: float or uint8 array (B, H, W, 3) or (H, W, 3), values in [0, 255].

        Returns:
            float32 NumPy array (B, H, W, C) (or (H, W, C) for one image), summing to 1 over
            the classes.

        Raises:
            ValueError: images that are not (B, H, W, 3) / (H, W, 3).
        """
        images, single = self._as_batch(images)
        out = None
        start = 0
        for chunk in self._chunks(images):
            if len(chunk) == len(images):  # one group: it is the result (no copy)
                out = chunk
            else:
                if out is None:
                    out = np.empty(images.shape[:3] + chunk.shape[-1:], np.float32)
                out[start:start + len(chunk)] = chunk
            start += len(chunk)
            del chunk
        return out[0] if single else out

    def labels(self, images):
        """``probabilities(images).argmax(-1)`` as int32 (B, H, W) (or (H, W)).

        Computed image by image (`probability_maps`): a batch's probabilities are never all
        held at once.
        """
        images, single = self._as_batch(images)
        out = np.empty(images.shape[:3], np.int32)
        # (no enumerate: its cached result tuple would keep the previous map alive while the
        # next one is computed)
        i = 0
        for probs in self.probability_maps(images):
            out[i] = probs.argmax(-1)
            del probs
            i += 1
        return out[0] if single else out


def predict_probabilities(model, images, sliding_window=None, overlap=1.0 / 3.0, scales=(1.0,),
                          flip=False, output_stride=None, input_size=None, batch_size=4):
    """Class probabilities for a batch, with optional sliding window and test-time augmentation.

    A one-call form of `PredictionEngine` (build an engine to predict many batches: with
    ``output_stride`` the model is rebuilt once per engine).

    Args:
        model: `keras.Model` (logits or a ``{"logits", ...}`` dict), a model path or a runner.
        images: float array (B, H, W, 3) or (H, W, 3), values in [0, 255].
        sliding_window, overlap, scales, flip, output_stride, input_size, batch_size: see
            `PredictionEngine`.

    Returns:
        float32 NumPy array (B, H, W, num_classes) (or (H, W, C)) of probabilities.

    Example:
    ```python
    probs = kd.training.predict_probabilities(model, images, sliding_window=769,
                                              scales=(0.75, 1.0, 1.25), flip=True)
    labels = probs.argmax(-1)
    ```
    """
    engine = PredictionEngine(model, sliding_window=sliding_window, overlap=overlap,
                              scales=scales, flip=flip, output_stride=output_stride,
                              input_size=input_size, batch_size=batch_size)
    return engine.probabilities(images)
