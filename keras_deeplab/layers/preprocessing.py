"""Per-backbone input normalisation, inside the model so exports take raw [0, 255] RGB."""

import keras
import numpy as np

from keras_deeplab.utils import register

# keras.applications conventions.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_TORCH_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
MODES = ("caffe", "tf", "torch", "none")


@register
class ImageNormalization(keras.layers.Layer):
    """Normalises RGB images in [0, 255] the way a backbone's ImageNet weights expect.

    Modes follow ``keras.applications.imagenet_utils.preprocess_input``: ``"caffe"``
    (RGB->BGR, subtract the ImageNet mean; ResNet, VGG), ``"tf"`` (scale to [-1, 1];
    MobileNetV2), ``"torch"`` (scale to [0, 1], standardise), ``"none"``.
    It also checks the channel count, so a grayscale or RGBA batch fails with a message
    that says what was expected.

    Args:
        mode: str. One of "caffe", "tf", "torch", "none". Defaults to "caffe".

    Example:
    >>> x = ImageNormalization("caffe")(images_0_255)
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.mode = mode

    def _check(self, shape):
        if shape[-1] is not None and shape[-1] != 3:
            raise ValueError(
                f"Expected RGB images with 3 channels (batch, height, width, 3), got shape "
                f"{tuple(shape)}. Convert grayscale with np.repeat(x, 3, axis=-1) or drop the "
                "alpha channel of RGBA images (x[..., :3])."
            )

    def build(self, input_shape):
        self._check(input_shape)

    def call(self, inputs):
        self._check(inputs.shape)
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            # A gather, not a reverse: TFLite's int8 quantizer mishandles REVERSE_V2.
            x = keras.ops.take(x, np.array([2, 1, 0], "int32"), axis=-1)
            return x - keras.ops.cast(np.array(_CAFFE_MEAN_BGR, "float32"), x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = keras.ops.cast(np.array(_TORCH_MEAN, "float32"), x.dtype)
            std = keras.ops.cast(np.array(_TORCH_STD, "float32"), x.dtype)
            return (x - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
