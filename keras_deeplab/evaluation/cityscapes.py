"""Official Cityscapes scoring: the results writer and the ``cityscapesscripts`` wrapper.

Predictions are trainIds (0..18); the Cityscapes benchmark and ``cityscapesscripts`` expect
*labelIds* (7 = road, 8 = sidewalk, ... 33 = bicycle) as single-channel 8-bit PNGs whose file
name contains ``<city>_<sequence>_<frame>``. `export_cityscapes_predictions` writes
``<output_dir>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` for every image of a split; zip
the folder for a test-server submission, or run `cityscapes_official_evaluation` (a wrapper
over ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) on it.

Images and ground truth are read by `keras_deeplab.data.cityscapes` (`CityscapesSource`), the
label table is `keras_deeplab.data.labels`, and the predictions come from
`keras_deeplab.inference.engine.PredictionEngine` — the reader, table and engine that
training, `kd.training.evaluate` and `kd.inference.Predictor` use.
"""

from __future__ import annotations

import contextlib
import glob
import os

import numpy as np

from keras_deeplab.data.labels import (
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_NUM_CLASSES,
    train_ids_to_label_ids,
)
from keras_deeplab.inference.engine import PredictionEngine
from keras_deeplab.np_metrics import confusion_matrix
from keras_deeplab.utils import IGNORE_LABEL


def cityscapes_eval_batches(data_dir, split="val"):
    """Full-resolution evaluation batches of one image from the official folders.

    ``kd.data.cityscapes(data_dir, split, batch_size=1, training=False, cache=False)``:
    ``{"images": float32 (1, H, W, 3) in [0, 255], "segmentation_masks": int32 trainIds
    (1, H, W, 1), 255 ignored}``, in the sorted order of `CityscapesSource`.

    Args:
        data_dir: str. Cityscapes root holding ``leftImg8bit/`` and ``gtFine/``.
        split: str. Defaults to "val".

    Raises:
        FileNotFoundError: a missing split folder or label file (named in the message).
    """
    from keras_deeplab.data.cityscapes import cityscapes

    return cityscapes(data_dir, split, batch_size=1, training=False, cache=False)


def result_path(output_dir, image_path):
    """Where the prediction for ``image_path`` is written: ``<output_dir>/<city>/<name>``."""
    city = os.path.basename(os.path.dirname(image_path))
    return os.path.join(output_dir, city, os.path.basename(image_path))


def _require_19_classes(engine):
    if engine.num_classes != CITYSCAPES_NUM_CLASSES:
        raise ValueError(
            f"Cityscapes export needs a {CITYSCAPES_NUM_CLASSES}-class (trainId) model; this one "
            f"predicts {engine.num_classes} classes.")


def export_cityscapes_predictions(model, data_dir, output_dir, split="val", sliding_window=None,
                                  overlap=1 / 3, scales=(1.0,), flip=False, output_stride=None,
                                  batch_size=4, progress=True):
    """Predicts every image of a Cityscapes split and writes labelId PNGs (the results writer).

    Args:
        model: a 19-class Cityscapes model (trainId logits): `keras.Model`, model path or
            runner.
        data_dir: Cityscapes root holding ``leftImg8bit/<split>/<city>/`` and the matching
            ``gtFine/<split>/`` files (the official download has them for test too).
        output_dir: where ``<city>/<name>_leftImg8bit.png`` predictions are written.
        split: "val", "test" or "train". Defaults to "val".
        sliding_window, overlap, scales, flip, output_stride, batch_size: see
            `keras_deeplab.inference.engine.PredictionEngine`.
        progress: bool. Progress bar. Defaults to True.

    Returns:
        List of written prediction paths, in the sorted order of the images.

    Raises:
        ValueError: a model that does not predict 19 classes.
        FileNotFoundError: a missing split folder or label file.

    Example:
    ```python
    kd.training.export_cityscapes_predictions(model, "/data/cityscapes", "results/val",
                                              sliding_window=769)
    ```
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from keras_deeplab.data.cityscapes import CityscapesSource

    engine = PredictionEngine(model, sliding_window=sliding_window, overlap=overlap,
                              scales=scales, flip=flip, output_stride=output_stride,
                              batch_size=batch_size)
    _require_19_classes(engine)
    source = CityscapesSource(data_dir, split)
    written = []
    examples = source.dataset().as_numpy_iterator()
    for path, example in tqdm(zip(source.image_paths, examples), total=len(source),
                              desc="Cityscapes export", disable=not progress, leave=False):
        labels = engine.labels(example["images"][None])[0]
        out = result_path(output_dir, path)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(train_ids_to_label_ids(labels), mode="L").save(out)
        written.append(out)
    return written


def _read_label_png(path):
    from PIL import Image

    if not os.path.exists(path):
        raise FileNotFoundError(f"No prediction {path}: expected one labelId PNG per image, "
                                "as export_cityscapes_predictions writes them.")
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel labelIds PNG, got mode "
                             f"{img.mode}.")
        return np.asarray(img).astype(np.int64)


def evaluate_cityscapes_predictions(prediction_dir, data_dir, split="val"):
    """Our scores of exported labelId PNGs against ``gtFine`` (19 trainId classes).

    Scored as ``cityscapesscripts`` does: a predicted labelId that is not evaluated (e.g. 0)
    is a false negative of the true class and a false positive of none.

    Args:
        prediction_dir: folder with ``<city>/<name>_leftImg8bit.png`` labelId PNGs.
        data_dir: Cityscapes root (read by `keras_deeplab.data.cityscapes.CityscapesSource`).
        split: str. Defaults to "val".

    Returns:
        dict with "mean_iou" (NaN if no class occurs), "per_class_iou" (float64 (19,), NaN
        for absent classes), "confusion_matrix" (int64 (19, 20): column 19 counts
        predictions of labelIds that are not evaluated) and "num_images".

    Raises:
        FileNotFoundError: a missing prediction, split folder or label file.
    """
    from keras_deeplab.data.cityscapes import CityscapesSource
    from keras_deeplab.evaluation.dataset import scores_from_confusion

    n = CITYSCAPES_NUM_CLASSES
    # trainIds 0..18, and n ("not evaluated") for every other predicted labelId.
    lut = np.where(CITYSCAPES_LABEL_ID_TO_TRAIN_ID == IGNORE_LABEL, n,
                   CITYSCAPES_LABEL_ID_TO_TRAIN_ID).astype(np.int64)
    source = CityscapesSource(data_dir, split)
    cm = np.zeros((n + 1, n + 1), np.int64)
    for path, example in zip(source.image_paths, source.dataset().as_numpy_iterator()):
        truth = np.asarray(example["segmentation_masks"])[..., 0]
        pred = lut[_read_label_png(result_path(prediction_dir, path))]
        if pred.shape != truth.shape:
            raise ValueError(f"Prediction {result_path(prediction_dir, path)} is "
                             f"{pred.shape} but {path} is {truth.shape}.")
        cm += confusion_matrix(truth, pred, n + 1, IGNORE_LABEL)
    # Row n is empty (no ground truth is "not evaluated"), so the IoU of classes 0..n-1 from
    # the square matrix counts column n as their false negatives only.
    scores = scores_from_confusion(cm)
    per_class = scores["per_class_iou"][:n]
    finite = np.isfinite(per_class)
    return {"mean_iou": float(per_class[finite].mean()) if finite.any() else float("nan"),
            "per_class_iou": per_class, "confusion_matrix": cm[:n], "num_images": len(source)}


@contextlib.contextmanager
def numpy_in1d_shim():
    """Provides ``np.in1d`` (removed in NumPy 2.4) while cityscapesscripts runs."""
    added = not hasattr(np, "in1d")
    if added:
        np.in1d = np.isin
    try:
        yield
    finally:
        if added:
            del np.in1d


def cityscapes_official_evaluation(prediction_dir, data_dir, split="val", instance_scores=None,
                                   quiet=True):
    """Runs ``cityscapesscripts``' pixel-level evaluation on a prediction folder.

    Args:
        prediction_dir: folder with labelId PNGs (any depth) named ``<city>_<seq>_<frame>*.png``.
        data_dir: Cityscapes root holding ``gtFine/<split>/``.
        split: Defaults to "val".
        instance_scores: bool or None. Also compute the instance-weighted iIoU (needs the
            ``*_gtFine_instanceIds.png`` files and ``np.in1d``, which NumPy >= 2.4 removed: it
            is provided during the call). None: on when instance files exist.
        quiet: bool. Silence cityscapesscripts' printing. Defaults to True.

    Returns:
        The dict of ``evaluateImgLists``; ``result["averageScoreClasses"]`` is the mIoU and
        ``result["classScores"]`` the per-class IoU by class name.

    Raises:
        FileNotFoundError: no ground truth files.
        RuntimeError: cityscapesscripts failed (missing prediction, size mismatch, ...).
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
    from cityscapesscripts.helpers.labels import labels as cs_labels

    gt_files = sorted(glob.glob(os.path.join(data_dir, "gtFine", split, "*",
                                             "*_gtFine_labelIds.png")))
    if not gt_files:
        raise FileNotFoundError(f"No *_gtFine_labelIds.png under {data_dir}/gtFine/{split}/.")
    args = cs_eval.args
    saved = dict(vars(args))
    try:
        args.predictionPath = os.path.abspath(prediction_dir)
        args.predictionWalk = None
        args.evalLabels = [label.id for label in cs_labels if label.id >= 0]
        if instance_scores is None:
            instance_scores = all(os.path.exists(f.replace("labelIds", "instanceIds"))
                                  for f in gt_files)
        args.evalInstLevelScore = bool(instance_scores)
        args.evalPixelAccuracy = False
        args.JSONOutput = False
        args.quiet = quiet
        args.colorized = False
        args.bold = args.nocol = ""
        with contextlib.ExitStack() as stack:
            stack.enter_context(numpy_in1d_shim())
            if quiet:
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
            try:
                predictions = [cs_eval.getPrediction(args, f) for f in gt_files]
                return cs_eval.evaluateImgLists(predictions, gt_files, args)
            except SystemExit as exc:  # cityscapesscripts' printError() exits
                raise RuntimeError(
                    "cityscapesscripts evaluation failed (missing prediction, size mismatch or "
                    f"unknown label; run with quiet=False for its message). Predictions: "
                    f"{prediction_dir}") from exc
    finally:
        vars(args).clear()
        vars(args).update(saved)
