"""Inference: a predictor for Keras / SavedModel / TFLite models and dense CRF post-processing.

Public API:
    Predictor(model_or_path, crf=None, input_size=None, sliding_window=None, palette=...,
              scales=(1.0,), flip=False, output_stride=None)
    PredictionEngine, predict_probabilities, window_starts: the one prediction engine
        (sliding window, multi-scale, flip, output stride) behind Predictor and evaluation
    PredictionResult
    DenseCRF(iterations=10, ...)
    crf_search(predictor_or_probabilities, images, labels, ...) -> CRFSearchResult
    colorize, overlay, get_palette, CITYSCAPES_PALETTE, VOC_PALETTE
    read_image, ImageReadError, UnknownModelTypeError
"""

from keras_deeplab.data.palette import (
    CITYSCAPES_PALETTE,
    VOC_PALETTE,
    colorize,
    get_palette,
    overlay,
)
from keras_deeplab.inference.crf import DenseCRF
from keras_deeplab.inference.crf_search import CRFSearchResult, crf_search
from keras_deeplab.inference.engine import PredictionEngine, predict_probabilities, window_starts
from keras_deeplab.inference.image_io import ImageReadError, read_image
from keras_deeplab.inference.predictor import Predictor
from keras_deeplab.inference.result import PredictionResult
from keras_deeplab.inference.runners import UnknownModelTypeError

__all__ = [
    "CITYSCAPES_PALETTE",
    "CRFSearchResult",
    "DenseCRF",
    "ImageReadError",
    "PredictionEngine",
    "PredictionResult",
    "Predictor",
    "UnknownModelTypeError",
    "VOC_PALETTE",
    "colorize",
    "crf_search",
    "get_palette",
    "overlay",
    "predict_probabilities",
    "read_image",
    "window_starts",
]
