"""Whole-image, sliding-window, multi-scale and flipped evaluation of segmentation models.

Everything here runs the model on NumPy batches and accumulates a confusion matrix in
NumPy (int64), so it works on every Keras backend and is exact on any dataset size.

Test-time augmentation averages *probabilities* (softmax of the logits): over the
overlapping windows of a sliding-window pass, over the scales (each resized back to the
input resolution with bilinear interpolation) and over the horizontal flip.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_deeplab.data.batches import dataset_length, iterate_batches
from keras_deeplab.np_metrics import confusion_matrix, iou_from_confusion, softmax  # noqa: F401
from keras_deeplab.training._utils import main_logits, model_num_classes


def _pair(value, name):
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{name} must be an int or an (height, width) pair > 0, got {value}")
    return value


def _resize(x, size, method="bilinear"):
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    out = keras.ops.image.resize(x, size, interpolation=method, antialias=False)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)


def model_probabilities(model, images, batch_size=4):
    """Softmax probabilities of ``model`` on a NumPy batch, run ``batch_size`` images at a time."""
    out = []
    strategy = getattr(model, "distribute_strategy", None)
    distributed = strategy is not None and getattr(strategy, "num_replicas_in_sync", 1) > 1
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if distributed:
            # predict_on_batch does not split a batch over replicas; predict does.
            logits = model.predict(chunk, batch_size=len(chunk), verbose=0)
        else:
            logits = model.predict_on_batch(chunk)
        logits = keras.ops.convert_to_numpy(main_logits(logits))
        out.append(softmax(np.asarray(logits)))
    return np.concatenate(out, axis=0)


def window_positions(length, window, stride):
    """Start offsets of windows of size ``window`` covering ``[0, length)`` with ``stride``.

    The last window is aligned with the end, so every pixel is covered and no window
    leaves the image (windows larger than the image shrink to it).
    """
    window = min(window, length)
    last = length - window
    starts = list(range(0, last + 1, max(1, stride)))
    if starts[-1] != last:
        starts.append(last)
    return starts, window


def sliding_window_probabilities(model, images, window, overlap=1 / 3, batch_size=4):
    """Probabilities from overlapping crops, averaged where they overlap.

    Args:
        model: a segmentation model returning logits at its input resolution.
        images: float32 NumPy array (B, H, W, 3).
        window: int or (h, w). Crop size (e.g. 769 for Cityscapes at 2048x1024).
        overlap: float in [0, 1). Fraction of the window shared by neighbouring crops.
            Defaults to 1/3 (stride = ceil(window * (1 - overlap))).
        batch_size: int. Crops per model call. Defaults to 4.

    Returns:
        float32 NumPy array (B, H, W, num_classes).
    """
    window = _pair(window, "sliding_window")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    b, h, w, _ = images.shape
    ys, wh = window_positions(h, window[0], math.ceil(window[0] * (1 - overlap)))
    xs, ww = window_positions(w, window[1], math.ceil(window[1] * (1 - overlap)))
    boxes = [(y, x) for y in ys for x in xs]
    total = None
    count = np.zeros((1, h, w, 1), np.float32)
    # Crops are run `batch_size` at a time and accumulated at once, so memory holds one
    # chunk of crop probabilities, not all of them.
    crops_per_call = max(1, batch_size // max(1, b))
    for start in range(0, len(boxes), crops_per_call):
        chunk = boxes[start:start + crops_per_call]
        crops = np.stack([images[:, y:y + wh, x:x + ww] for y, x in chunk], axis=1)
        crops = crops.reshape((-1, wh, ww, images.shape[-1]))
        probs = model_probabilities(model, crops, batch_size).reshape(
            (b, len(chunk), wh, ww, -1))
        if total is None:
            total = np.zeros((b, h, w, probs.shape[-1]), np.float32)
        for i, (y, x) in enumerate(chunk):
            total[:, y:y + wh, x:x + ww] += probs[:, i]
            count[:, y:y + wh, x:x + ww] += 1.0
    return total / count


def predict_probabilities(model, images, sliding_window=None, overlap=1 / 3, scales=(1.0,),
                          flip=False, batch_size=4):
    """Class probabilities for a batch, with optional sliding window and test-time augmentation.

    Args:
        model: segmentation model (logits, or a dict with "logits").
        images: float32 array (B, H, W, 3) with values in [0, 255].
        sliding_window: None, int or (h, w). Evaluate with overlapping crops of this size
            (applied at each scale). Defaults to None (whole image).
        overlap: float. Overlap of sliding windows. Defaults to 1/3.
        scales: sequence of float. Input scales; probabilities are resized back and averaged.
            Defaults to (1.0,). DeepLab's multi-scale test uses (0.5, 0.75, 1.0, 1.25, 1.5, 1.75).
        flip: bool. Also average the horizontally flipped prediction. Defaults to False.
        batch_size: int. Images (or crops) per model call. Defaults to 4.

    Returns:
        float32 NumPy array (B, H, W, num_classes) of probabilities.

    Example:
    ```python
    probs = kd.training.predict_probabilities(model, images, sliding_window=769,
                                              scales=(0.75, 1.0, 1.25), flip=True)
    labels = probs.argmax(-1)
    ```
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, 3), got shape {images.shape}")
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive numbers, got {scales}")
    h, w = images.shape[1:3]
    total = None
    views = 0
    for scale in scales:
        size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        scaled = _resize(images, size)
        for flipped in ((False, True) if flip else (False,)):
            x = scaled[:, :, ::-1] if flipped else scaled
            x = np.ascontiguousarray(x)
            if sliding_window is not None:
                probs = sliding_window_probabilities(model, x, sliding_window, overlap,
                                                     batch_size)
            else:
                probs = model_probabilities(model, x, batch_size)
            if flipped:
                probs = probs[:, :, ::-1]
            probs = _resize(np.ascontiguousarray(probs), (h, w))
            total = probs if total is None else total + probs
            views += 1
    return total / views


def format_iou_table(per_class_iou, class_names=None, mean_iou=None, pixel_accuracy=None):
    """Per-class IoU table (percent) as a string; classes never seen show "n/a"."""
    per_class_iou = np.asarray(per_class_iou, np.float64)
    names = list(class_names) if class_names is not None else [
        str(c) for c in range(len(per_class_iou))]
    width = max([len(n) for n in names] + [14])
    lines = [f"{'class':<{width}}  {'IoU':>6}", "-" * (width + 8)]
    for name, iou in zip(names, per_class_iou):
        value = "   n/a" if np.isnan(iou) else f"{100 * iou:6.2f}"
        lines.append(f"{name:<{width}}  {value}")
    lines.append("-" * (width + 8))
    if mean_iou is not None:
        lines.append(f"{'mean IoU':<{width}}  {100 * mean_iou:6.2f}")
    if pixel_accuracy is not None:
        lines.append(f"{'pixel accuracy':<{width}}  {100 * pixel_accuracy:6.2f}")
    return "\n".join(lines)


def evaluate(model, dataset, num_classes=None, ignore_class=255, sliding_window=None,
             overlap=1 / 3, scales=(1.0,), flip=False, output_stride=None, class_names=None,
             batch_size=4, max_batches=None, progress=True, verbose=False):
    """Evaluates a segmentation model: mean IoU, per-class IoU, pixel accuracy.

    Args:
        model: segmentation model (logits, or a dict with "logits").
        dataset: `tf.data.Dataset` or iterable of `{"images", "segmentation_masks"}` dicts
            or `(images, masks)` tuples. Full-resolution images are fine.
        num_classes: int or None. Defaults to the model's number of output channels; an
            explicit value that disagrees with the model raises.
        ignore_class: int or None. Label excluded from the scores. Defaults to 255.
        sliding_window: None, int or (h, w). See `predict_probabilities`.
        overlap: float. Sliding-window overlap. Defaults to 1/3.
        scales: sequence of float. Test scales. Defaults to (1.0,).
        flip: bool. Horizontal-flip test-time augmentation. Defaults to False.
        output_stride: int or None. Evaluate at another output stride with the same weights
            (e.g. train at 16, evaluate at 8) via `keras_deeplab.models.with_output_stride`.
        class_names: sequence of str or None. Names for the table.
        batch_size: int. Images or crops per model call. Defaults to 4.
        max_batches: int or None. Evaluate only this many batches.
        progress: bool. tqdm progress bar. Defaults to True.
        verbose: bool. Print the per-class table. Defaults to False.

    Returns:
        dict with "mean_iou" (float), "per_class_iou" (NumPy, NaN for unseen classes),
        "pixel_accuracy", "confusion_matrix" (int64), "num_images", "class_names".

    Raises:
        ValueError: empty dataset, or dataset classes that do not match the model's.

    Example:
    ```python
    results = kd.training.evaluate(model, val_ds, sliding_window=769, output_stride=8,
                                   class_names=CITYSCAPES_CLASSES, verbose=True)
    print(results["mean_iou"])
    ```
    """
    from tqdm.auto import tqdm

    model_classes = model_num_classes(model)
    if num_classes is None:
        num_classes = model_classes
    elif int(num_classes) != model_classes:
        raise ValueError(
            f"The dataset has {num_classes} classes but the model predicts {model_classes}. "
            "Build the model with num_classes matching the dataset.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes.")
    if output_stride is not None:
        from keras_deeplab.models import with_output_stride

        if getattr(model, "output_stride", None) != output_stride:
            model = with_output_stride(model, output_stride)
    cm = np.zeros((num_classes, num_classes), np.int64)
    num_images = 0
    total = dataset_length(dataset)
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    for images, masks in tqdm(iterate_batches(dataset, max_batches), total=total,
                              desc="Evaluating", disable=not progress, leave=False):
        if masks is None:
            raise ValueError("The evaluation dataset yields no segmentation masks.")
        probs = predict_probabilities(model, images, sliding_window=sliding_window,
                                      overlap=overlap, scales=scales, flip=flip,
                                      batch_size=batch_size)
        masks = np.asarray(masks)
        if masks.ndim == 4:
            masks = masks[..., 0]
        if masks.shape != probs.shape[:3]:
            raise ValueError(f"Mask shape {masks.shape} does not match the image batch "
                             f"{probs.shape[:3]}.")
        cm += confusion_matrix(masks, probs.argmax(-1), num_classes, ignore_class)
        num_images += len(masks)
    if num_images == 0:
        raise ValueError(
            "The evaluation dataset is empty (it yielded no batches). Check the split name, "
            "the data directory and any `take`/`filter` applied to it.")
    per_class = iou_from_confusion(cm)
    seen = ~np.isnan(per_class)
    results = {
        "mean_iou": float(per_class[seen].mean()) if seen.any() else 0.0,
        "per_class_iou": per_class,
        "pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "confusion_matrix": cm,
        "num_images": num_images,
        "class_names": list(class_names) if class_names is not None else None,
    }
    if verbose:
        print(format_iou_table(per_class, class_names, results["mean_iou"],
                               results["pixel_accuracy"]))
    return results
