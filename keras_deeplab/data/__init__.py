"""keras_deeplab.data: datasets yielding {"images", "segmentation_masks"} batches."""

from keras_deeplab.data.augment import augment_example  # noqa: F401
from keras_deeplab.data.pipeline import ArraySource, make_pipeline  # noqa: F401
from keras_deeplab.data.synthetic import (  # noqa: F401
    CLASS_NAMES,
    synthetic,
    synthetic_arrays,
    write_synthetic,
)
