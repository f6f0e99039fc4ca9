"""Atrous Spatial Pyramid Pooling: the DeepLabv3 version (concat + image pooling)."""

import keras

from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.resize import resize_to
from keras_deeplab.utils import register


@register
class ASPP(keras.layers.Layer):
    """DeepLabv3 ASPP: a 1x1 branch, 3x3 atrous branches and image-level pooling.

    Every branch is conv + BN + ReLU with ``filters`` channels; the image-pooling branch
    averages the whole feature map, projects it with a 1x1 conv and broadcasts it back.
    The branches are concatenated and projected by a 1x1 conv, followed by dropout.

    Args:
        filters: int. Channels of every branch and of the output. Defaults to 256.
        rates: tuple of int. Atrous rates of the 3x3 branches; DeepLab uses (6, 12, 18)
            at output stride 16 and (12, 24, 36) at 8. Defaults to (6, 12, 18).
        image_pooling: bool. Add the image-level pooling branch. Defaults to True.
        dropout: float. Dropout after the projection. Defaults to 0.1.
        separable: bool. Depthwise-separable 3x3 branches (DeepLabv3+). Defaults to False.
        bn_momentum: float. Defaults to 0.99.
        bn_epsilon: float. Defaults to 1e-5.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.

    Example:
    >>> y = ASPP(256, rates=(6, 12, 18))(features)   # (B, h, w, 256)

    Reference: Chen et al., "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv:1706.05587, 2017, section 3.3.
    """

    def __init__(
        self,
        filters=256,
        rates=(6, 12, 18),
        image_pooling=True,
        dropout=0.1,
        separable=False,
        bn_momentum=0.99,
        bn_epsilon=1e-5,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)
        self.image_pooling = bool(image_pooling)
        self.dropout = float(dropout)
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
        self.branches = [ConvBNReLU(self.filters, 1, name="aspp_1x1", **common)]
        for rate in self.rates:
            self.branches.append(
                ConvBNReLU(
                    self.filters,
                    3,
                    dilation_rate=rate,
                    separable=self.separable,
                    name=f"aspp_rate{rate}",
                    **common,
                )
            )
        self.pool_conv = (
            ConvBNReLU(self.filters, 1, name="aspp_pool", **common) if self.image_pooling else None
        )
        self.project = ConvBNReLU(self.filters, 1, name="aspp_project", **common)
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for branch in self.branches:
            branch.build(input_shape)
        n = len(self.branches)
        if self.pool_conv is not None:
            self.pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
            n += 1
        self.project.build((*input_shape[:-1], n * self.filters))

    def call(self, inputs, training=None):
        outputs = [branch(inputs, training=training) for branch in self.branches]
        if self.pool_conv is not None:
            pooled = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
            pooled = self.pool_conv(pooled, training=training)
            shape = keras.ops.shape(inputs)
            outputs.append(resize_to(pooled, shape[1], shape[2], "bilinear"))
        x = keras.ops.concatenate(outputs, axis=-1)
        x = self.project(x, training=training)
        return self.drop(x, training=training)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            rates=self.rates,
            image_pooling=self.image_pooling,
            dropout=self.dropout,
            separable=self.separable,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
