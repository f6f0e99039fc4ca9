"""Per-pixel baseline: 1x1 convolutions only, so no pixel sees its neighbours."""

import keras

from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.models.base import SegmentationModel
from keras_deeplab.utils import register


@register
class PixelClassifier(SegmentationModel):
    """A per-pixel MLP (1x1 convs): the "no context" lower bound for a dataset.

    If it scores close to a context model, the dataset can be solved from colour alone.

    Args:
        num_classes: int. Number of classes.
        hidden: tuple of int. Widths of the hidden 1x1 layers. Defaults to (64, 64).
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Example:
    >>> model = PixelClassifier(num_classes=6)
    """

    def __init__(self, num_classes, hidden=(64, 64), input_shape=(None, None, 3), **kwargs):
        hidden = tuple(int(h) for h in hidden)
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("tf", name="normalization")(inputs)
        for i, width in enumerate(hidden):
            x = keras.layers.Conv2D(width, 1, activation="relu", name=f"pixel_dense{i}")(x)
        x = keras.layers.Conv2D(num_classes, 1, name="logits_classifier")(x)
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_config(num_classes=num_classes, hidden=hidden, input_shape=tuple(input_shape))
