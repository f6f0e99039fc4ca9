"""Inference: a predictor for Keras / SavedModel / TFLite models and dense CRF post-processing.

Public API:
    Predictor(model_or_path, crf=None, input_size=None, sliding_window=None, palette=...)
    PredictionResult
    DenseCRF(iterations=10, ...)
    crf_search(predictor_or_probabilities, images, labels, ...) -> CRFSearchResult
    colorize, overlay, get_palette, CITYSCAPES_PALETTE, VOC_PALETTE
    read_image, ImageReadError, UnknownModelTypeError
    sliding_window_logits
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
from keras_deeplab.inference.image_io import ImageReadError, read_image
from keras_deeplab.inference.predictor import Predictor
from keras_deeplab.inference.result import PredictionResult
from keras_deeplab.inference.runners import UnknownModelTypeError
from keras_deeplab.inference.sliding_window import sliding_window_logits

__all__ = [
    "CITYSCAPES_PALETTE",
    "CRFSearchResult",
    "DenseCRF",
    "ImageReadError",
    "PredictionResult",
    "Predictor",
    "UnknownModelTypeError",
    "VOC_PALETTE",
    "colorize",
    "crf_search",
    "get_palette",
    "overlay",
    "read_image",
    "sliding_window_logits",
]
