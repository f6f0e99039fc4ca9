"""Convolution -> batch norm -> activation block (plain, atrous or depthwise-separable)."""

import keras

from keras_deeplab.layers.atrous_conv import AtrousConv2D, AtrousDepthwiseConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.utils import register


@register
class ConvBNReLU(keras.layers.Layer):
    """Convolution, batch normalisation and activation, the unit every DeepLab head uses.

    With ``separable=True`` the convolution is depthwise-separable as in DeepLabv3+
    (Xception / MobileNet heads): an atrous depthwise 3x3 conv, BN, activation, then a
    pointwise 1x1 conv, BN, activation.

    Args:
        filters: int. Output channels.
        kernel_size: int. Kernel size. Defaults to 3.
        strides: int. Stride. Defaults to 1.
        dilation_rate: int. Atrous rate. Defaults to 1.
        separable: bool. Depthwise-separable convolution. Defaults to False.
        activation: str or None. Activation after BN. Defaults to "relu".
        bn_momentum: float. Batch-norm momentum. Defaults to 0.99.
        bn_epsilon: float. Batch-norm epsilon. Defaults to 1e-5.
        kernel_initializer: Kernel initializer. Defaults to "he_normal".
        kernel_regularizer: Optional kernel regularizer. Defaults to None.

    Example:
    >>> block = ConvBNReLU(256, 3, dilation_rate=6)
    >>> y = block(keras.ops.ones((1, 33, 33, 64)))   # (1, 33, 33, 256)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        dilation_rate=1,
        separable=False,
        activation="relu",
        bn_momentum=0.99,
        bn_epsilon=1e-5,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.separable = bool(separable)
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        def bn(name):
            return BatchNormalization(
                momentum=bn_momentum, epsilon=bn_epsilon, name=name, dtype=self.dtype_policy
            )

        def act(name):
            return keras.layers.Activation(activation or "linear", name=name, dtype=self.dtype_policy)

        self._layers_seq = []
        if self.separable and self.kernel_size > 1:
            self._layers_seq += [
                AtrousDepthwiseConv2D(
                    self.kernel_size,
                    strides=self.strides,
                    dilation_rate=self.dilation_rate,
                    padding="same",
                    use_bias=False,
                    depthwise_initializer=kernel_initializer,
                    depthwise_regularizer=kernel_regularizer,
                    name="depthwise",
                    dtype=self.dtype_policy,
                ),
                bn("depthwise_bn"),
                act("depthwise_act"),
            ]
            pointwise = (1, 1, "pointwise")
        else:
            pointwise = (self.kernel_size, self.strides, "conv")
        self._layers_seq += [
            AtrousConv2D(
                self.filters,
                pointwise[0],
                strides=pointwise[1],
                dilation_rate=self.dilation_rate if pointwise[0] > 1 else 1,
                padding="same",
                use_bias=False,
                kernel_initializer=kernel_initializer,
                kernel_regularizer=kernel_regularizer,
                name=pointwise[2],
                dtype=self.dtype_policy,
            ),
            bn("bn"),
            act("act"),
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers_seq:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._layers_seq:
            if isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers_seq:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            separable=self.separable,
            activation=self.activation,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
