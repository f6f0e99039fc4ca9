"""Resize a feature map to the spatial size of a reference tensor (works with unknown H/W)."""

import keras

from keras_deeplab.utils import register


def resize_to(x, height, width, interpolation="bilinear"):
    """Resizes NHWC ``x`` to ``(height, width)``; sizes may be symbolic tensors on TF.

    ``keras.ops.image.resize`` wants Python ints, which an unknown H/W under
    ``tf.function`` tracing (SavedModel / TFLite with dynamic size) is not, so the
    TensorFlow backend calls ``tf.image.resize`` with the dynamic shape instead.
    Bilinear uses half-pixel centres on every backend.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out = tf.image.resize(x, tf.stack([height, width]), method=interpolation)
        return tf.cast(out, x.dtype)
    return keras.ops.image.resize(
        x, (int(height), int(width)), interpolation=interpolation, data_format="channels_last"
    )


@register
class ResizeLike(keras.layers.Layer):
    """Resizes the first input to the height and width of the second (NHWC).

    Args:
        interpolation: str. "bilinear" for features and logits, "nearest" for masks.
            Defaults to "bilinear".

    Example:
    >>> up = ResizeLike()([logits, images])   # logits at the image resolution
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}."
            )
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        shape = keras.ops.shape(reference)  # dynamic dims come back as tensors on TF
        return resize_to(x, shape[1], shape[2], self.interpolation)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config
