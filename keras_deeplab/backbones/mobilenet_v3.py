"""MobileNetV3-Large backbone, laid out as torchvision builds it for segmentation.

torchvision's ``mobilenet_v3_large(dilated=True)`` (``torchvision/models/mobilenetv3.py``) is
the backbone of its ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large``
checkpoints. This module rebuilds it from Keras layers with the same arithmetic, so converted
torchvision weights give the same features:

- ``_make_divisible`` channel rounding (squeeze-excitation width included);
- hard-swish / ReLU per block, squeeze-excitation with ReLU and hard-sigmoid gating;
- batch norm with epsilon 0.001 (torch momentum 0.01, i.e. Keras momentum 0.99);
- torchvision's symmetric zero padding ``(k - 1) // 2 * dilation`` on every conv: the strided
  convs pad explicitly and convolve "valid" (Keras' "same" pads less at the top/left for even
  sizes, which would shift every feature map by a pixel);
- dilation: a block whose stride is removed keeps stride 1 and takes the doubled rate itself,
  as do the blocks after it (`keras_deeplab.backbones.dilation.stage_strides_and_rates`);
  output stride 16 is exactly torchvision's ``dilated=True``, 32 its ``dilated=False``.

Layer names are torchvision's module paths inside ``features`` with "-" for "." (``"4-block-1-0"``
is ``features[4].block[1][0]``, the depthwise conv of block 4; torchvision's segmentation models
hold the same modules as ``backbone.4.block.1.0``), so a converter maps a state_dict key to a
layer by name. Not "." itself: on the PyTorch backend a Keras variable's path becomes a torch
parameter name, which must not contain ".".
"""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.dilation import stage_strides_and_rates
from keras_deeplab.layers.atrous_conv import AtrousConv2D, AtrousDepthwiseConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.utils import check_output_stride, register

# torchvision's `_mobilenet_v3_conf("mobilenet_v3_large")`: per inverted-residual block
# (features[1] .. features[15]): input, kernel, expanded, output channels, squeeze-excitation,
# activation ("RE" ReLU, "HS" hard-swish), stride.
LARGE_BLOCKS = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
#: ``features`` index -> feature key: the last block of each nominal stride (C2..C4), the
#: final 1x1 conv (C5), and ``"low"``: features[4], the first (strided) block of the stride-8
#: stage, which torchvision's LR-ASPP reads as its low-level input and DeepLabV3-MobileNetV3
#: as its auxiliary input (``stage_indices[-4]`` in torchvision's segmentation builders).
FEATURE_INDEX = {3: "C2", 6: "C3", 12: "C4", 16: "C5", 4: "low"}


def make_divisible(value, divisor=8, min_value=None):
    """torchvision's / TF-slim's ``_make_divisible``: round ``value`` to a multiple of
    ``divisor`` (at least ``min_value``, default ``divisor``), never more than 10 % down."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _activation(kind, name):
    return keras.layers.Activation("hard_silu" if kind == "HS" else "relu", name=name)


@register
class MobileNetV3LargeBackbone(Backbone):
    """MobileNetV3-Large with torchvision's layout, padding and dilation (its segmentation
    backbone).

    ``features[0]`` (3x3 stride-2 conv, BN, hard-swish, 16 channels), fifteen inverted
    residual blocks ``features[1..15]`` (1x1 expand, kxk depthwise, optional
    squeeze-excitation, 1x1 linear projection, residual where shapes allow) and
    ``features[16]`` (1x1 conv to 960 channels, BN, hard-swish). No classifier.

    Outputs the `Backbone` feature dict plus one key:

    ======  ===============  ========  ===============================
    key     torchvision      channels  stride at OS32 / OS16 / OS8
    ======  ===============  ========  ===============================
    C2      features[3]      24        4 / 4 / 4
    C3      features[6]      40        8 / 8 / 8
    C4      features[12]     112       16 / 16 / 8
    C5      features[16]     960       32 / 16 / 8
    low     features[4]      40        8 / 8 / 8
    ======  ===============  ========  ===============================

    Args:
        output_stride: int. 8, 16 or 32. 16 is torchvision's ``dilated=True`` (the
            segmentation checkpoints), 32 its ``dilated=False``. Defaults to 16.
        include_preprocessing: bool. Normalise [0, 255] RGB with the ImageNet mean and
            standard deviation of [0, 1] RGB inside the model (torchvision's
            ``Normalize``; `ImageNormalization` mode "torch"). Defaults to True.
        kernel_regularizer: Optional kernel regularizer for every conv. Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Raises:
        ValueError: ``output_stride`` not 8, 16 or 32.

    Example:
    >>> backbone = MobileNetV3LargeBackbone(output_stride=16)
    >>> features = backbone(images)   # images: (B, H, W, 3) float RGB in [0, 255]
    >>> features["C5"].shape          # (B, ceil(H / 16), ceil(W / 16), 960)

    Reference: Howard et al., "Searching for MobileNetV3", ICCV 2019; torchvision
    ``torchvision/models/mobilenetv3.py``.
    """

    def __init__(
        self,
        output_stride=16,
        include_preprocessing=True,
        kernel_regularizer=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        output_stride = check_output_stride(output_stride)
        reg = keras.regularizers.get(kernel_regularizer)
        strides, rates = stage_strides_and_rates(
            [block[6] for block in LARGE_BLOCKS], output_stride, initial_stride=2
        )

        def bn(name):
            return BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)

        def conv(x, filters, kernel, name, stride=1, rate=1, depthwise=False, bias=False):
            if stride > 1:  # torchvision pads (k - 1) // 2 on every side, then strides
                x = keras.layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}-pad")(x)
            padding = "valid" if stride > 1 or kernel == 1 else "same"
            if depthwise:
                return AtrousDepthwiseConv2D(
                    kernel, strides=stride, dilation_rate=rate, padding=padding, use_bias=bias,
                    depthwise_regularizer=reg, name=name,
                )(x)
            return AtrousConv2D(
                filters, kernel, strides=stride, dilation_rate=rate, padding=padding,
                use_bias=bias, kernel_regularizer=reg, name=name,
            )(x)

        def conv_bn_act(x, filters, kernel, prefix, activation, **conv_kwargs):
            x = conv(x, filters, kernel, f"{prefix}-0", **conv_kwargs)
            x = bn(f"{prefix}-1")(x)
            return _activation(activation, f"{prefix}-2")(x) if activation else x

        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("torch", name="normalization")(inputs) if include_preprocessing else inputs
        x = conv_bn_act(x, 16, 3, "0", "HS", stride=2)
        features = {}
        for index, (cin, kernel, expanded, cout, use_se, act, _) in enumerate(LARGE_BLOCKS, 1):
            stride, rate = strides[index - 1], rates[index - 1]
            prefix = f"{index}-block"
            y, j = x, 0
            if expanded != cin:
                y = conv_bn_act(y, expanded, 1, f"{prefix}-{j}", act)
                j += 1
            y = conv_bn_act(y, expanded, kernel, f"{prefix}-{j}", act, stride=stride, rate=rate,
                            depthwise=True)
            j += 1
            if use_se:
                se = f"{prefix}-{j}"
                s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{se}-avgpool")(y)
                s = conv(s, make_divisible(expanded // 4), 1, f"{se}-fc1", bias=True)
                s = keras.layers.ReLU(name=f"{se}-activation")(s)
                s = conv(s, expanded, 1, f"{se}-fc2", bias=True)
                s = keras.layers.Activation("hard_sigmoid", name=f"{se}-scale_activation")(s)
                y = keras.layers.Multiply(name=f"{se}-scale")([y, s])
                j += 1
            y = conv_bn_act(y, cout, 1, f"{prefix}-{j}", None)
            if stride == 1 and cin == cout:
                y = keras.layers.Add(name=f"{index}-add")([x, y])
            x = y
            if index in FEATURE_INDEX:
                features[FEATURE_INDEX[index]] = x
        features["C5"] = conv_bn_act(x, 6 * LARGE_BLOCKS[-1][3], 1, "16", "HS")
        features = {key: features[key] for key in ("C2", "C3", "C4", "C5", "low")}
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self._set_backbone_attributes(output_stride, input_shape)
        self.include_preprocessing = include_preprocessing
        self.kernel_regularizer = reg

    def _backbone_config(self):
        return {
            "output_stride": self.output_stride,
            "include_preprocessing": self.include_preprocessing,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }


__all__ = ["FEATURE_INDEX", "LARGE_BLOCKS", "MobileNetV3LargeBackbone", "make_divisible"]
