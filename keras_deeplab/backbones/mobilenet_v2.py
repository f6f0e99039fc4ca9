"""MobileNetV2 backbone with output stride 8 / 16 / 32 (the edge model for TFLite)."""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.dilation import stage_strides_and_rates
from keras_deeplab.layers.atrous_conv import AtrousDepthwiseConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.utils import check_output_stride, register

# (expansion, filters, stride) per inverted-residual block, block ids 0..16.
_BLOCKS = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)
_FEATURES = {2: "C2", 5: "C3", 12: "C4", 16: "C5"}  # block id -> feature key
#: Block whose depthwise output is the extra feature "C2_depthwise" (the DeepLabv3+ decoder's
#: low-level feature of TF DeepLab's MobileNetV2 models).
_DEPTHWISE_FEATURE_BLOCK = 2


def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _bn(name):
    return BatchNormalization(epsilon=1e-3, momentum=0.999, name=name)


@register
class MobileNetV2Backbone(Backbone):
    """MobileNetV2 (keras.applications layout) with dilated depthwise convs.

    Strides beyond ``output_stride`` are removed and the depthwise convs from there on
    use doubled rates, as in the DeepLabv3 mobile models. The final 1x1 "Conv_1" of the
    classifier is not part of the backbone (DeepLab uses the 320-channel block 16).
    "same" padding on the strided depthwise convs equals keras' ``correct_pad`` zero
    padding, so ImageNet weights give identical features.

    Outputs the `Backbone` feature dict: ``"C2"``, ``"C3"``, ``"C4"``, ``"C5"`` are the
    outputs of inverted-residual blocks 2, 5, 12 and 16 (``block_{i}_project_BN`` or its
    ``_add``), at strides 4, 8, 16, 32 for output stride 32; 4, 8, 16, 16 for 16;
    4, 8, 8, 8 for 8 (``feature_strides``). One extra key, ``"C2_depthwise"``, is block 2's
    depthwise output after its BN and ReLU6 (``block_2_depthwise_relu``: 144 channels at
    alpha 1.0, stride 4 at every output stride), the low-level feature the TF DeepLab
    MobileNetV2 decoder reads (the original's ``MobilenetV2`` end point
    ``layer_4/depthwise_output``); the standard models read C2..C5 only.

    Args:
        alpha: float. Width multiplier. Defaults to 1.0.
        output_stride: int. 8, 16 or 32. Defaults to 16.
        include_preprocessing: bool. Scale [0, 255] RGB to [-1, 1] inside. Defaults to True.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Example:
    >>> backbone = MobileNetV2Backbone(output_stride=16)

    Reference: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    CVPR 2018.
    """

    def __init__(
        self,
        alpha=1.0,
        output_stride=16,
        include_preprocessing=True,
        kernel_regularizer=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        output_stride = check_output_stride(output_stride)
        reg = keras.regularizers.get(kernel_regularizer)
        strides, rates = stage_strides_and_rates(
            [s for _, _, s in _BLOCKS], output_stride, initial_stride=2
        )
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("tf", name="normalization")(inputs) if include_preprocessing else inputs
        x = keras.layers.Conv2D(
            _make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1",
            kernel_regularizer=reg,
        )(x)
        x = _bn("bn_Conv1")(x)
        x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
        features = {}
        for block_id, (expansion, filters, _) in enumerate(_BLOCKS):
            stride = strides[block_id]
            # The rate of a block whose stride was removed is the rate before it.
            rate = rates[block_id - 1] if block_id and strides[block_id] != _BLOCKS[block_id][2] else rates[block_id]
            in_channels = x.shape[-1]
            out_channels = _make_divisible(int(filters * alpha))
            prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
            y = x
            if block_id:
                y = keras.layers.Conv2D(
                    expansion * in_channels, 1, use_bias=False, name=prefix + "expand",
                    kernel_regularizer=reg,
                )(y)
                y = _bn(prefix + "expand_BN")(y)
                y = keras.layers.ReLU(6.0, name=prefix + "expand_relu")(y)
            y = AtrousDepthwiseConv2D(
                3, strides=stride, dilation_rate=rate, padding="same", use_bias=False,
                name=prefix + "depthwise", depthwise_regularizer=reg,
            )(y)
            y = _bn(prefix + "depthwise_BN")(y)
            y = keras.layers.ReLU(6.0, name=prefix + "depthwise_relu")(y)
            if block_id == _DEPTHWISE_FEATURE_BLOCK:
                features["C2_depthwise"] = y
            y = keras.layers.Conv2D(
                out_channels, 1, use_bias=False, name=prefix + "project", kernel_regularizer=reg
            )(y)
            y = _bn(prefix + "project_BN")(y)
            if in_channels == out_channels and stride == 1:
                y = keras.layers.Add(name=prefix + "add")([x, y])
            x = y
            if block_id in _FEATURES:
                features[_FEATURES[block_id]] = x
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self._set_backbone_attributes(output_stride, input_shape)
        self.alpha = alpha
        self.include_preprocessing = include_preprocessing
        self.kernel_regularizer = reg
        self.keras_application = "MobileNetV2"

    def _backbone_config(self):
        return {
            "alpha": self.alpha,
            "output_stride": self.output_stride,
            "include_preprocessing": self.include_preprocessing,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }
