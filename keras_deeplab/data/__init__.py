"""Datasets as `tf.data` pipelines yielding {"images", "segmentation_masks"}."""

from keras_deeplab.data.augment import SegmentationAugmentation
from keras_deeplab.data.batches import iterate_batches, split_batch
from keras_deeplab.data.cityscapes import (
    CityscapesSource,
    cityscapes,
    label_ids_to_train_ids,
)
from keras_deeplab.data.cityscapes_tfds import CityscapesTFDSSource, cityscapes_tfds
from keras_deeplab.data.distribute import distribute
from keras_deeplab.data.fake_trees import write_fake_cityscapes, write_fake_voc
from keras_deeplab.data.folder import FolderSource, folder
from keras_deeplab.data.palette import (
    CITYSCAPES_PALETTE,
    IGNORE_COLOR,
    VOC_PALETTE,
    colorize,
    get_palette,
    overlay,
    voc_colormap,
)
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
    "CITYSCAPES_PALETTE",
    "IGNORE_COLOR",
    "VOC_PALETTE",
    "AugmentConfig",
    "CLASS_NAMES",
    "CityscapesSource",
    "cityscapes",
    "CityscapesTFDSSource",
    "cityscapes_tfds",
    "colorize",
    "FolderSource",
    "distribute",
    "folder",
    "get_palette",
    "iterate_batches",
    "label_ids_to_train_ids",
    "make_pipeline",
    "overlay",
    "PascalVOCSource",
    "SegmentationAugmentation",
    "pascal_voc",
    "split_batch",
    "synthetic",
    "synthetic_arrays",
    "TFRecordSource",
    "tfrecords",
    "voc_colormap",
    "write_fake_cityscapes",
    "write_fake_voc",
    "write_tfrecords",
    "write_synthetic",
]
