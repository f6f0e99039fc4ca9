"""U-Net baseline built from the library's conv-BN-ReLU blocks (handles odd sizes)."""

import keras

from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.models.base import SegmentationModel
from keras_deeplab.utils import register


@register
class UNet(SegmentationModel):
    """U-Net: a contracting path of conv blocks and max pools, an expanding path that
    upsamples, concatenates the skip connection and convolves.

    Upsampling resizes to the skip tensor's size, so any input size works (the original
    needs sizes divisible by 2**depth). Trained from scratch (no pretrained weights).

    Args:
        num_classes: int. Number of classes.
        filters: tuple of int. Channels per level, top to bottom. Defaults to
            (64, 128, 256, 512, 1024) as in the paper.
        dropout: float. Dropout at the bottleneck. Defaults to 0.0.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (e.g. "mixed_bfloat16") to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Example:
    >>> model = UNet(num_classes=7, filters=(32, 64, 128, 256))

    Reference: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015.
    """

    def __init__(
        self,
        num_classes,
        filters=(64, 128, 256, 512, 1024),
        dropout=0.0,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        filters = tuple(int(f) for f in filters)
        if len(filters) < 2:
            raise ValueError(f"UNet needs at least two levels of filters, got {filters!r}.")
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("torch", name="normalization")(inputs)
        skips = []
        for level, f in enumerate(filters):
            if level:
                x = keras.layers.MaxPooling2D(2, padding="same", name=f"down{level}_pool")(x)
            x = ConvBNReLU(f, 3, name=f"down{level}_conv1")(x)
            x = ConvBNReLU(f, 3, name=f"down{level}_conv2")(x)
            skips.append(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)
        for level in range(len(filters) - 2, -1, -1):
            skip = skips[level]
            x = ResizeLike(name=f"up{level}_resize")([x, skip])
            x = ConvBNReLU(filters[level], 1, name=f"up{level}_reduce")(x)
            x = keras.layers.Concatenate(name=f"up{level}_concat")([skip, x])
            x = ConvBNReLU(filters[level], 3, name=f"up{level}_conv1")(x)
            x = ConvBNReLU(filters[level], 3, name=f"up{level}_conv2")(x)
        x = keras.layers.Conv2D(num_classes, 1, name="logits_classifier")(x)
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_config(
            num_classes=num_classes, filters=filters, dropout=dropout, input_shape=tuple(input_shape)
        )
