"""Segmentation losses (``kd.losses``).

All losses take integer masks ``(B, H, W, 1)`` (ignore label 255 by default) and float logits
``(B, H, W, C)``; they compute in float32 under any mixed-precision policy, use only
``keras.ops`` (TensorFlow, JAX and PyTorch backends) and are serializable.

Auxiliary heads: a model built with ``aux_head=True`` returns ``{"logits", "aux_logits"}``.
Either compile with per-output losses (see `keras_deeplab.training.aux_loss`) or call a loss
directly on the dict, which returns ``loss(logits) + aux_weight * loss(aux_logits)``.
"""

from keras_deeplab.training.class_weights import (  # noqa: F401
    class_weights_from_counts,
    compute_class_weights,
    count_pixels,
)
from keras_deeplab.training.cross_entropy import CrossEntropy  # noqa: F401
from keras_deeplab.training.dice import DiceLoss  # noqa: F401
from keras_deeplab.training.lovasz import LovaszSoftmax  # noqa: F401
from keras_deeplab.training.ohem import OHEMCrossEntropy  # noqa: F401

__all__ = [
    "CrossEntropy",
    "DiceLoss",
    "LovaszSoftmax",
    "OHEMCrossEntropy",
    "compute_class_weights",
    "class_weights_from_counts",
    "count_pixels",
]
