"""The DeepLabv3+ decoder: fuse upsampled ASPP features with low-level features."""

import keras

from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.resize import resize_to
from keras_deeplab.utils import register


@register
class DeepLabV3PlusDecoder(keras.layers.Layer):
    """DeepLabv3+ decoder.

    Projects the stride-4 low-level features to ``low_level_filters`` channels (1x1 conv,
    BN, ReLU), upsamples the encoder output bilinearly to their size, concatenates both
    and refines with ``num_convs`` 3x3 conv-BN-ReLU blocks of ``filters`` channels.
    Called on ``[encoder_features, low_level_features]``.

    Args:
        filters: int. Channels of the refinement convs. Defaults to 256.
        low_level_filters: int. Channels of the low-level projection. Defaults to 48.
        num_convs: int. Number of 3x3 refinement convs. Defaults to 2.
        separable: bool. Depthwise-separable refinement convs. Defaults to False.
        bn_momentum: float. Defaults to 0.99.
        bn_epsilon: float. Defaults to 1e-5.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.

    Example:
    >>> y = DeepLabV3PlusDecoder(256, 48)([aspp_out, res2])   # at the res2 resolution

    Reference: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for
    Semantic Image Segmentation", ECCV 2018, section 3.1.
    """

    def __init__(
        self,
        filters=256,
        low_level_filters=48,
        num_convs=2,
        separable=False,
        bn_momentum=0.99,
        bn_epsilon=1e-5,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.low_level_filters = int(low_level_filters)
        self.num_convs = int(num_convs)
        self.separable = bool(separable)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        common = dict(
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            kernel_regularizer=kernel_regularizer,
            dtype=self.dtype_policy,
        )
        self.low_level_project = ConvBNReLU(self.low_level_filters, 1, name="low_level_project", **common)
        self.convs = [
            ConvBNReLU(self.filters, 3, separable=self.separable, name=f"decoder_conv{i}", **common)
            for i in range(self.num_convs)
        ]

    def build(self, input_shapes):
        high_shape, low_shape = (tuple(s) for s in input_shapes)
        self.low_level_project.build(low_shape)
        channels = high_shape[-1] + self.low_level_filters
        for conv in self.convs:
            conv.build((*low_shape[:-1], channels))
            channels = self.filters

    def call(self, inputs, training=None):
        high, low = inputs
        low = self.low_level_project(low, training=training)
        shape = keras.ops.shape(low)
        high = resize_to(high, shape[1], shape[2], "bilinear")
        x = keras.ops.concatenate([high, low], axis=-1)
        for conv in self.convs:
            x = conv(x, training=training)
        return x

    def compute_output_shape(self, input_shapes):
        high_shape, low_shape = input_shapes
        channels = self.filters if self.num_convs else high_shape[-1] + self.low_level_filters
        return (*tuple(low_shape)[:-1], channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            low_level_filters=self.low_level_filters,
            num_convs=self.num_convs,
            separable=self.separable,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
