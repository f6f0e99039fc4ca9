"""DeepLabv2 ASPP: parallel atrous classifiers whose logits are summed."""

import keras

from keras_deeplab.layers.atrous_conv import AtrousConv2D
from keras_deeplab.utils import register

HEADS = ("conv", "fc")


@register
class ASPPV2(keras.layers.Layer):
    """DeepLabv2 ASPP: one atrous classifier per rate, logits summed.

    ``head="conv"`` is the ResNet-101 variant (each branch a single 3x3 atrous conv to
    ``num_classes``). ``head="fc"`` is the VGG-16 variant (each branch fc6 = 3x3 atrous
    conv with ``fc_filters`` channels, fc7 = 1x1 conv, fc8 = 1x1 classifier, ReLU and
    dropout between). DeepLab-LargeFOV is ``head="fc", rates=(12,)``.

    Args:
        num_classes: int. Number of classes (output channels).
        rates: tuple of int. One branch per rate. Defaults to (6, 12, 18, 24) (ASPP-L).
        head: str. "conv" or "fc". Defaults to "conv".
        fc_filters: int. Channels of fc6/fc7 in the "fc" head. Defaults to 1024.
        dropout: float. Dropout after fc6 and fc7 in the "fc" head. Defaults to 0.5.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.

    Example:
    >>> logits = ASPPV2(21, rates=(6, 12, 18, 24))(res5_features)

    Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
    Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017, section 3.2.
    """

    def __init__(
        self,
        num_classes,
        rates=(6, 12, 18, 24),
        head="conv",
        fc_filters=1024,
        dropout=0.5,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        if not rates:
            raise ValueError("ASPPV2 needs at least one rate.")
        self.num_classes = int(num_classes)
        self.rates = tuple(int(r) for r in rates)
        self.head = head
        self.fc_filters = int(fc_filters)
        self.dropout = float(dropout)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.branches = []
        for rate in self.rates:
            conv = dict(kernel_regularizer=kernel_regularizer, dtype=self.dtype_policy)
            if head == "conv":
                layers = [
                    AtrousConv2D(
                        self.num_classes,
                        3,
                        dilation_rate=rate,
                        padding="same",
                        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        name=f"fc8_rate{rate}",
                        **conv,
                    )
                ]
            else:
                layers = [
                    AtrousConv2D(
                        self.fc_filters,
                        3,
                        dilation_rate=rate,
                        padding="same",
                        activation="relu",
                        name=f"fc6_rate{rate}",
                        **conv,
                    ),
                    keras.layers.Dropout(self.dropout, dtype=self.dtype_policy),
                    keras.layers.Conv2D(
                        self.fc_filters, 1, activation="relu", name=f"fc7_rate{rate}", **conv
                    ),
                    keras.layers.Dropout(self.dropout, dtype=self.dtype_policy),
                    keras.layers.Conv2D(
                        self.num_classes,
                        1,
                        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        name=f"fc8_rate{rate}",
                        **conv,
                    ),
                ]
            self.branches.append(layers)

    def build(self, input_shape):
        for layers in self.branches:
            shape = tuple(input_shape)
            for layer in layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        total = None
        for layers in self.branches:
            x = inputs
            for layer in layers:
                if isinstance(layer, keras.layers.Dropout):
                    x = layer(x, training=training)
                else:
                    x = layer(x)
            total = x if total is None else total + x
        return total

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            rates=self.rates,
            head=self.head,
            fc_filters=self.fc_filters,
            dropout=self.dropout,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
