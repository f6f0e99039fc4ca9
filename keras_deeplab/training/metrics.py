"""Segmentation metrics (``kd.metrics``): confusion-matrix based, exact under tf.distribute."""

from keras_deeplab.training.class_iou import ClassIoU, per_class_iou_metrics  # noqa: F401
from keras_deeplab.training.mean_iou import MeanIoU, iou_from_confusion  # noqa: F401
from keras_deeplab.training.pixel_accuracy import PixelAccuracy  # noqa: F401

__all__ = ["MeanIoU", "ClassIoU", "PixelAccuracy", "per_class_iou_metrics", "iou_from_confusion"]
