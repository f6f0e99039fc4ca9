"""Dataset evaluation: mean IoU, per-class IoU and pixel accuracy of the engine's labels.

The labels scored here come from `keras_deeplab.inference.engine.PredictionEngine`, the
engine `kd.inference.Predictor` runs, so the same settings (sliding window, scales, flip,
output stride) score exactly the labels a user gets. The confusion matrix is accumulated in
NumPy (int64): exact on any dataset size and the same on every Keras backend. Images are
scored one at a time (`PredictionEngine.probability_maps`): evaluation keeps no batch of
probability maps, only the confusion matrix.
"""

from __future__ import annotations

import numpy as np

from keras_deeplab.data.batches import dataset_length, iterate_batches
from keras_deeplab.inference.engine import PredictionEngine
from keras_deeplab.np_metrics import confusion_matrix, iou_from_confusion, mean_iou
from keras_deeplab.utils import IGNORE_LABEL


def format_iou_table(per_class_iou, class_names=None, mean_iou=None, pixel_accuracy=None):
    """Per-class IoU table (percent) as a string; classes never seen show "n/a".

    Args:
        per_class_iou: sequence of float in [0, 1] or NaN, one per class.
        class_names: sequence of str or None. Defaults to the class ids.
        mean_iou: float or None. Printed below the classes ("n/a" when NaN).
        pixel_accuracy: float or None. Printed below the classes ("n/a" when NaN).

    Returns:
        str, one line per class.
    """
    per_class_iou = np.asarray(per_class_iou, np.float64)
    names = list(class_names) if class_names is not None else [
        str(c) for c in range(len(per_class_iou))]
    width = max([len(n) for n in names] + [14])

    def percent(value):
        return "   n/a" if value is None or np.isnan(value) else f"{100 * value:6.2f}"

    lines = [f"{'class':<{width}}  {'IoU':>6}", "-" * (width + 8)]
    for name, iou in zip(names, per_class_iou):
        lines.append(f"{name:<{width}}  {percent(iou)}")
    lines.append("-" * (width + 8))
    if mean_iou is not None:
        lines.append(f"{'mean IoU':<{width}}  {percent(mean_iou)}")
    if pixel_accuracy is not None:
        lines.append(f"{'pixel accuracy':<{width}}  {percent(pixel_accuracy)}")
    return "\n".join(lines)


def scores_from_confusion(cm):
    """``mean_iou``, ``per_class_iou`` and ``pixel_accuracy`` of a confusion matrix.

    The package's one rule for empty scores: a class absent from both labels and predictions
    has IoU NaN; the mean is over the other classes (`keras_deeplab.np_metrics.mean_iou`), and
    NaN when there are none; pixel accuracy is NaN on zero pixels.

    Args:
        cm: int (C, C) confusion matrix, rows ground truth, columns predictions.

    Returns:
        dict with "mean_iou" (float), "per_class_iou" (float64 (C,)) and "pixel_accuracy".
    """
    cm = np.asarray(cm)
    total = cm.sum()
    return {
        "mean_iou": mean_iou(cm),
        "per_class_iou": iou_from_confusion(cm),
        "pixel_accuracy": float(np.trace(cm) / total) if total else float("nan"),
    }


def evaluate(model, dataset, num_classes=None, ignore_class=IGNORE_LABEL, sliding_window=None,
             overlap=1 / 3, scales=(1.0,), flip=False, output_stride=None, class_names=None,
             batch_size=4, max_batches=None, progress=True, verbose=False):
    """Evaluates a segmentation model: mean IoU, per-class IoU, pixel accuracy.

    Predictions are ``PredictionEngine(model, sliding_window, overlap, scales, flip,
    output_stride).probabilities(images).argmax(-1)``: the labels `kd.inference.Predictor`
    gives with the same settings.

    Args:
        model: `keras.Model` (logits, or a dict with "logits"), a model path (``.keras``,
            SavedModel directory, ``.tflite``) or a runner (see
            `keras_deeplab.inference.engine`).
        dataset: `tf.data.Dataset` or iterable of `{"images", "segmentation_masks"}` dicts
            or `(images, masks)` tuples; images float (B, H, W, 3) in [0, 255], masks int
            (B, H, W, 1) or (B, H, W). Full-resolution images are fine.
        num_classes: int or None. Defaults to the model's number of output channels; an
            explicit value that disagrees with the model raises.
        ignore_class: int or None. Label excluded from the scores. Defaults to 255.
        sliding_window: None, int or (h, w). Window size for sliding-window inference.
            Defaults to None (whole image).
        overlap: float in [0, 1). Sliding-window overlap. Defaults to 1/3.
        scales: sequence of float. Test scales. Defaults to (1.0,).
        flip: bool. Horizontal-flip test-time augmentation. Defaults to False.
        output_stride: int or None. Evaluate a Keras model at another output stride with
            the same weights (e.g. train at 16, evaluate at 8). Defaults to None.
        class_names: sequence of str or None. Names for the table.
        batch_size: int. Images or windows per model call. Defaults to 4.
        max_batches: int or None. Evaluate only this many batches.
        progress: bool. tqdm progress bar. Defaults to True.
        verbose: bool. Print the per-class table. Defaults to False.

    Returns:
        dict with "mean_iou" (float; NaN when no class occurs), "per_class_iou" (NumPy
        float64, NaN for classes absent from labels and predictions), "pixel_accuracy",
        "confusion_matrix" (int64 (C, C), rows ground truth), "num_images" (padding examples
        of `keras_deeplab.data.padding`, zero images labelled ``ignore_class``, not counted),
        "class_names".

    Raises:
        ValueError: empty dataset, batches without masks, masks that do not match the
            images, mask values outside the classes, or dataset classes that do not match
            the model's.

    Example:
    ```python
    results = kd.training.evaluate(model, val_ds, sliding_window=769, output_stride=8,
                                   class_names=kd.data.labels.CITYSCAPES_CLASSES, verbose=True)
    print(results["mean_iou"])
    ```
    """
    from tqdm.auto import tqdm

    engine = PredictionEngine(model, sliding_window=sliding_window, overlap=overlap,
                              scales=scales, flip=flip, output_stride=output_stride,
                              batch_size=batch_size)
    model_classes = engine.num_classes
    if num_classes is None:
        num_classes = model_classes
    elif model_classes is not None and int(num_classes) != model_classes:
        raise ValueError(
            f"The dataset has {num_classes} classes but the model predicts {model_classes}. "
            "Build the model with num_classes matching the dataset.")
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes.")
    cm = None
    num_images = 0
    total = dataset_length(dataset)
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    for images, masks in tqdm(iterate_batches(dataset, max_batches), total=total,
                              desc="Evaluating", disable=not progress, leave=False):
        if masks is None:
            raise ValueError("The evaluation dataset yields no segmentation masks.")
        images = np.asarray(images)
        masks = np.asarray(masks)
        if images.ndim == 3:  # one unbatched example
            images, masks = images[None], masks[None]
        if masks.ndim == 4:
            masks = masks[..., 0]
        if masks.shape != images.shape[:3]:
            raise ValueError(f"Mask shape {masks.shape} does not match the image batch "
                             f"{images.shape[:3]}.")
        # one image's probabilities at a time (engine.probability_maps), scored and dropped:
        # evaluation holds no batch of maps, no float copy of them and no one-hot
        k = 0  # (not enumerate: its cached tuple would keep the last map alive meanwhile)
        for probs in engine.probability_maps(images):
            # argmax of NaN is class 0: a plausible, false score. The sum is finite exactly
            # when every probability is (and needs no full-size boolean map).
            if not np.isfinite(probs.sum()):
                raise FloatingPointError(
                    f"The model's predictions for evaluation images {num_images}.."
                    f"{num_images + len(masks) - 1} are not finite (NaN/inf "
                    "logits): the weights diverged or the images hold NaN/inf. Nothing is "
                    "scored.")
            if num_classes is None:  # a runner that does not say
                num_classes = int(probs.shape[-1])
            if cm is None:
                cm = np.zeros((num_classes, num_classes), np.int64)
            predicted = probs.argmax(-1)
            del probs
            cm += confusion_matrix(masks[k], predicted, num_classes, ignore_class)
            del predicted
            k += 1
        # batches padded for several replicas (keras_deeplab.data.padding) end with zero
        # images labelled ignore_class everywhere: they score nothing and are not images
        padding = np.all(masks.reshape(len(masks), -1) == ignore_class, axis=1) & \
            np.all(images.reshape(len(images), -1) == 0, axis=1)
        num_images += int(len(masks) - padding.sum())
    if num_images == 0:
        raise ValueError(
            "The evaluation dataset is empty (it yielded no batches). Check the split name, "
            "the data directory and any `take`/`filter` applied to it.")
    results = scores_from_confusion(cm)
    results.update(confusion_matrix=cm, num_images=num_images,
                   class_names=list(class_names) if class_names is not None else None)
    if verbose:
        print(format_iou_table(results["per_class_iou"], class_names, results["mean_iou"],
                               results["pixel_accuracy"]))
    return results
