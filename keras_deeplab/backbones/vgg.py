"""VGG-16 backbone for DeepLab-LargeFOV (output stride 8 via dilation)."""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.dilation import stage_strides_and_rates
from keras_deeplab.layers.atrous_conv import AtrousConv2D
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.utils import check_output_stride, register

_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@register
class VGG16Backbone(Backbone):
    """VGG-16 convolutional layers with DeepLab's dilation, returning a dict of features.

    Layer names follow ``keras.applications.VGG16`` so its ImageNet weights load. At
    output stride 32 the network equals keras' (2x2 max pools, stride 2; "same" padding
    so odd sizes round up). At 8 (DeepLab-LargeFOV) pool4 and pool5 become 3x3 stride-1
    pools and conv5 uses rate 2; at 16 only pool5 loses its stride.

    Outputs the `Backbone` feature dict: ``"C2"`` .. ``"C5"`` are the outputs of the
    pools ``block2_pool`` .. ``block5_pool``, at strides 4, 8, 16, 32 for output stride 32;
    4, 8, 16, 16 for 16; 4, 8, 8, 8 for 8 (``feature_strides``).

    Args:
        output_stride: int. 8, 16 or 32. Defaults to 8.
        include_preprocessing: bool. Normalise [0, 255] RGB input inside. Defaults to True.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Example:
    >>> backbone = VGG16Backbone(output_stride=8)
    >>> backbone(images)["C5"].shape   # (B, H/8, W/8, 512)

    Reference: Simonyan & Zisserman, ICLR 2015; Chen et al., "Semantic Image Segmentation
    with Deep Convolutional Nets and Fully Connected CRFs", ICLR 2015 (LargeFOV).
    """

    def __init__(
        self,
        output_stride=8,
        include_preprocessing=True,
        kernel_regularizer=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        output_stride = check_output_stride(output_stride)
        reg = keras.regularizers.get(kernel_regularizer)
        strides, rates = stage_strides_and_rates((2, 2, 2, 2, 2), output_stride, initial_stride=1)
        # The rate applies to the convs *after* a removed stride, i.e. the next block.
        conv_rates = [1] + rates[:-1]
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("caffe", name="normalization")(inputs) if include_preprocessing else inputs
        features = {}
        for b, (filters, n) in enumerate(_BLOCKS):
            for i in range(n):
                x = AtrousConv2D(
                    filters, 3, padding="same", activation="relu", dilation_rate=conv_rates[b],
                    name=f"block{b + 1}_conv{i + 1}", kernel_regularizer=reg,
                )(x)
            if strides[b] == 2:
                x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{b + 1}_pool")(x)
            else:
                x = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"block{b + 1}_pool")(x)
            if b >= 1:
                features[f"C{b + 1}"] = x
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self._set_backbone_attributes(output_stride, input_shape)
        self.include_preprocessing = include_preprocessing
        self.kernel_regularizer = reg
        self.keras_application = "VGG16"

    def _backbone_config(self):
        return {
            "output_stride": self.output_stride,
            "include_preprocessing": self.include_preprocessing,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }
