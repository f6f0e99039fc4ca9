"""Datasets as `tf.data` pipelines yielding {"images", "segmentation_masks"}."""

from keras_deeplab.data.augment import SegmentationAugmentation
from keras_deeplab.data.cityscapes import (
    CityscapesSource,
    cityscapes,
    label_ids_to_train_ids,
)
from keras_deeplab.data.cityscapes_tfds import CityscapesTFDSSource, cityscapes_tfds
from keras_deeplab.data.distribute import distribute
from keras_deeplab.data.folder import FolderSource, folder
from keras_deeplab.data.pascal_voc import PascalVOCSource, pascal_voc
from keras_deeplab.data.pipeline import ArraySource, AugmentConfig, make_pipeline
from keras_deeplab.data.synthetic import (
    CLASS_NAMES,
    synthetic,
    synthetic_arrays,
    write_synthetic,
)
from keras_deeplab.data.tfrecord import TFRecordSource, tfrecords, write_tfrecords

__all__ = [
    "ArraySource",
    "AugmentConfig",
    "CLASS_NAMES",
    "CityscapesSource",
    "cityscapes",
    "CityscapesTFDSSource",
    "cityscapes_tfds",
    "FolderSource",
    "distribute",
    "folder",
    "label_ids_to_train_ids",
    "make_pipeline",
    "PascalVOCSource",
    "SegmentationAugmentation",
    "pascal_voc",
    "synthetic",
    "synthetic_arrays",
    "TFRecordSource",
    "tfrecords",
    "write_tfrecords",
    "write_synthetic",
]
