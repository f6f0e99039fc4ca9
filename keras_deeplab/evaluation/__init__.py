"""Evaluation: dataset scores and the official Cityscapes scoring, on the prediction engine.

Every prediction scored here comes from `keras_deeplab.inference.engine.PredictionEngine`,
so the scores are those of the labels `kd.inference.Predictor` gives with the same settings.

Public API:
    evaluate(model, dataset, ..., sliding_window=, overlap=, scales=, flip=, output_stride=)
    format_iou_table, scores_from_confusion
    predict_probabilities (the engine's one-call form)
    Cityscapes (`keras_deeplab.evaluation.cityscapes`): export_cityscapes_predictions (the
    results writer), evaluate_cityscapes_predictions, cityscapes_official_evaluation
    (cityscapesscripts), cityscapes_eval_batches, numpy_in1d_shim
"""

from keras_deeplab.evaluation.cityscapes import (
    cityscapes_eval_batches,
    cityscapes_official_evaluation,
    evaluate_cityscapes_predictions,
    export_cityscapes_predictions,
    numpy_in1d_shim,
)
from keras_deeplab.evaluation.dataset import evaluate, format_iou_table, scores_from_confusion
from keras_deeplab.inference.engine import predict_probabilities

__all__ = [
    "cityscapes_eval_batches",
    "cityscapes_official_evaluation",
    "evaluate",
    "evaluate_cityscapes_predictions",
    "export_cityscapes_predictions",
    "format_iou_table",
    "numpy_in1d_shim",
    "predict_probabilities",
    "scores_from_confusion",
]
