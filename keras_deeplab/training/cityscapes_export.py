"""Cityscapes results export (labelId PNGs in the official layout) and official evaluation.

Predictions are trainIds (0..18); the Cityscapes benchmark and ``cityscapesscripts`` expect
*labelIds* (7 = road, 8 = sidewalk, ... 33 = bicycle) as single-channel 8-bit PNGs whose file
name contains ``<city>_<sequence>_<frame>``. `export_cityscapes_predictions` writes
``<output_dir>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` for every image of
``<data_dir>/leftImg8bit/<split>/<city>/``; zip the folder for a test-server submission, or
run `cityscapes_official_evaluation` (a wrapper over
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) on it.
"""

from __future__ import annotations

import contextlib
import glob
import os

import numpy as np

from keras_deeplab.training.evaluation import confusion_matrix, predict_probabilities
from keras_deeplab.training.mean_iou import iou_from_confusion

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# trainId -> labelId, from cityscapesscripts.helpers.labels (checked in the tests).
CITYSCAPES_TRAINID_TO_LABELID = np.array(
    [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], np.uint8)


def labelid_to_trainid_lut(ignore_class=255):
    """256-entry lookup table labelId -> trainId (255 for labels not evaluated)."""
    lut = np.full(256, ignore_class, np.uint8)
    lut[CITYSCAPES_TRAINID_TO_LABELID] = np.arange(19, dtype=np.uint8)
    return lut


def trainid_to_labelid(train_ids):
    """Maps a trainId array (0..18) to Cityscapes labelIds (uint8); other values become 0."""
    train_ids = np.asarray(train_ids)
    bad = (train_ids < 0) | (train_ids >= 19)
    out = CITYSCAPES_TRAINID_TO_LABELID[np.clip(train_ids, 0, 18)]
    return np.where(bad, 0, out).astype(np.uint8)


def _split_dir(data_dir, split):
    images_dir = os.path.join(data_dir, "leftImg8bit", split)
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(
            f"Cityscapes images not found: {images_dir} does not exist. Expected "
            "<data_dir>/leftImg8bit/<split>/<city>/*_leftImg8bit.png (the official layout).")
    return images_dir


def list_cityscapes_images(data_dir, split="val"):
    """Sorted ``*_leftImg8bit.png`` paths of a split; raises if there are none."""
    images_dir = _split_dir(data_dir, split)
    paths = sorted(glob.glob(os.path.join(images_dir, "*", "*_leftImg8bit.png")))
    if not paths:
        raise FileNotFoundError(f"No *_leftImg8bit.png images under {images_dir}/<city>/.")
    return paths


def ground_truth_path(data_dir, image_path, split="val"):
    """The ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` file of an image."""
    city = os.path.basename(os.path.dirname(image_path))
    stem = os.path.basename(image_path)[: -len("_leftImg8bit.png")]
    return os.path.join(data_dir, "gtFine", split, city, f"{stem}_gtFine_labelIds.png")


def result_path(output_dir, image_path):
    """Where the prediction for ``image_path`` is written."""
    city = os.path.basename(os.path.dirname(image_path))
    return os.path.join(output_dir, city, os.path.basename(image_path))


def _read_rgb(path):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.float32)


def _read_label(path):
    from PIL import Image

    if not os.path.exists(path):
        raise FileNotFoundError(f"Missing ground truth {path} (expected next to the images in "
                                "gtFine/<split>/<city>/).")
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel labelIds PNG, got mode "
                             f"{img.mode}.")
        return np.asarray(img).astype(np.int64)


def export_cityscapes_predictions(model, data_dir, output_dir, split="val", sliding_window=None,
                                  overlap=1 / 3, scales=(1.0,), flip=False, batch_size=4,
                                  progress=True):
    """Predicts every image of a Cityscapes split and writes labelId PNGs.

    Args:
        model: a 19-class Cityscapes model (trainId logits).
        data_dir: Cityscapes root holding ``leftImg8bit/<split>/<city>/``.
        output_dir: where ``<city>/<name>_leftImg8bit.png`` predictions are written.
        split: "val", "test" or "train". Defaults to "val".
        sliding_window, overlap, scales, flip, batch_size: see
            `keras_deeplab.training.predict_probabilities`.
        progress: bool. Progress bar. Defaults to True.

    Returns:
        List of written prediction paths, in the order of the sorted images.

    Example:
    ```python
    kd.training.export_cityscapes_predictions(model, "/data/cityscapes", "results/val",
                                              sliding_window=769)
    ```
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from keras_deeplab.training._utils import model_num_classes

    if model_num_classes(model) != 19:
        raise ValueError(f"Cityscapes export needs a 19-class (trainId) model; this one predicts "
                         f"{model_num_classes(model)} classes.")
    written = []
    for path in tqdm(list_cityscapes_images(data_dir, split), desc="Cityscapes export",
                     disable=not progress, leave=False):
        image = _read_rgb(path)[None]
        probs = predict_probabilities(model, image, sliding_window=sliding_window,
                                      overlap=overlap, scales=scales, flip=flip,
                                      batch_size=batch_size)
        label_ids = trainid_to_labelid(probs[0].argmax(-1))
        out = result_path(output_dir, path)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(label_ids, mode="L").save(out)
        written.append(out)
    return written


def evaluate_cityscapes_predictions(prediction_dir, data_dir, split="val", ignore_class=255):
    """Our mIoU of exported labelId PNGs against ``gtFine`` (19 trainId classes)."""
    lut = labelid_to_trainid_lut(ignore_class)
    cm = np.zeros((19, 19), np.int64)
    images = list_cityscapes_images(data_dir, split)
    for path in images:
        pred_path = result_path(prediction_dir, path)
        if not os.path.exists(pred_path):
            raise FileNotFoundError(f"No prediction {pred_path} for {path}.")
        truth = lut[_read_label(ground_truth_path(data_dir, path, split))]
        pred = lut[_read_label(pred_path)]
        pred = np.where(pred == ignore_class, 0, pred)  # a non-eval labelId counts as wrong
        cm += confusion_matrix(truth, pred, 19, ignore_class)
    per_class = iou_from_confusion(cm)
    seen = ~np.isnan(per_class)
    return {"mean_iou": float(per_class[seen].mean()) if seen.any() else 0.0,
            "per_class_iou": per_class, "confusion_matrix": cm, "num_images": len(images)}


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


def cityscapes_eval_batches(data_dir, split="val", ignore_class=255):
    """Yields ``(image (1, H, W, 3) float32, trainId mask (1, H, W, 1) int32)`` per image.

    A minimal full-resolution reader of the official layout for evaluation and export; the
    training pipeline (augmentation, tf.data) is `keras_deeplab.data.cityscapes`.
    """
    lut = labelid_to_trainid_lut(ignore_class)
    for path in list_cityscapes_images(data_dir, split):
        image = _read_rgb(path)
        truth = _read_label(ground_truth_path(data_dir, path, split))
        if truth.shape != image.shape[:2]:
            raise ValueError(f"{path} is {image.shape[:2]} but its ground truth is "
                             f"{truth.shape}.")
        yield image[None], lut[truth][None, ..., None].astype(np.int32)
