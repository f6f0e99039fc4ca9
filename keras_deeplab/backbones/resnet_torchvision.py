"""torchvision's ResNet v1.5 as a dilated `Backbone` (layer names = torchvision's modules)."""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.layers.atrous_conv import AtrousConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.utils import check_output_stride, register

#: Bottleneck units per stage (layer1..layer4), torchvision ``resnet50`` / ``resnet101`` / ``resnet152``.
TORCHVISION_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
#: torchvision's ``nn.BatchNorm2d`` defaults: eps 1e-5, momentum 0.1 (Keras' 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def replace_stride_with_dilation(output_stride):
    """torchvision's ``replace_stride_with_dilation`` for layer2..layer4 at an output stride:
    8 -> [False, True, True] (its segmentation models), 16 -> [False, False, True],
    32 -> [False, False, False]."""
    return {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[
        check_output_stride(output_stride)]


def _bn(name):
    return BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv(x, filters, kernel, name, stride=1, dilation=1, reg=None):
    """torchvision's conv: symmetric zero padding ``dilation * (kernel // 2)``, no bias."""
    pad = dilation * (kernel // 2)
    if pad and stride == 1:
        padding = "same"  # symmetric for odd kernels at stride 1: the same numbers
    else:
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}-pad")(x)
        padding = "valid"
    # AtrousConv2D: a Conv2D whose dilated form is one native CONV_2D in TFLite (Keras'
    # Conv2D lowers dilation to space-to-batch); same weights, same numbers.
    conv = AtrousConv2D if dilation > 1 else keras.layers.Conv2D
    return conv(filters, kernel, strides=stride, padding=padding, dilation_rate=dilation,
                use_bias=False, name=name, kernel_regularizer=reg)(x)


def _bottleneck(x, planes, stride, dilation, downsample, name, reg):
    """torchvision ``Bottleneck`` (v1.5: the stride sits on the 3x3 conv)."""
    shortcut = x
    if downsample:
        shortcut = _conv(x, 4 * planes, 1, f"{name}-downsample-0", stride=stride, reg=reg)
        shortcut = _bn(f"{name}-downsample-1")(shortcut)
    x = _conv(x, planes, 1, f"{name}-conv1", reg=reg)
    x = _bn(f"{name}-bn1")(x)
    x = keras.layers.ReLU(name=f"{name}-relu1")(x)
    x = _conv(x, planes, 3, f"{name}-conv2", stride=stride, dilation=dilation, reg=reg)
    x = _bn(f"{name}-bn2")(x)
    x = keras.layers.ReLU(name=f"{name}-relu2")(x)
    x = _conv(x, 4 * planes, 1, f"{name}-conv3", reg=reg)
    x = _bn(f"{name}-bn3")(x)
    x = keras.layers.Add(name=f"{name}-add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}-relu3")(x)


@register
class TorchvisionResNetBackbone(Backbone):
    """torchvision's ResNet-50/101/152 (v1.5) with dilation, returning features C2..C5.

    Follows ``torchvision.models.resnet`` exactly so its weights convert one to one
    (`keras_deeplab.pretrained`): the stride of a downsampling unit sits on its 3x3 conv
    (v1.5; keras.applications' `ResNetBackbone` puts it on the first 1x1), no conv has a
    bias, BN epsilon 1e-5, every conv pads ``dilation * (k // 2)`` zeros on all sides
    (strided convs too, where Keras' ``"same"`` would pad only bottom/right), the stem's
    max pool pads 1. Layers are named after torchvision's modules with "-" for "." (``conv1``,
    ``bn1``, ``layer3-0-downsample-0``, ...; the PyTorch backend refuses "." in parameter
    names). Output stride follows torchvision's
    ``replace_stride_with_dilation``, including its rule that the *first* unit of a dilated
    stage keeps the previous stage's dilation: at OS8 (its segmentation models) layer3's
    units use dilation 1, 2, 2, ... and layer4's 2, 4, 4.

    Input: float RGB (B, H, W, 3) in [0, 255]; with ``include_preprocessing`` the
    torchvision normalisation ``(x / 255 - mean) / std`` (ImageNet mean/std) runs inside.
    Output: ``{"C2": layer1, "C3": layer2, "C4": layer3, "C5": layer4}`` (256, 512, 1024,
    2048 channels) at the strides of `feature_strides(output_stride)`.

    Args:
        depth: int. 50, 101 or 152. Defaults to 50.
        output_stride: int. 8, 16 or 32. Defaults to 8 (torchvision's segmentation models).
        include_preprocessing: bool. Normalise [0, 255] RGB inside. Defaults to True.
        kernel_regularizer: Optional kernel regularizer. Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy to build under. Defaults to the global policy.

    Example:
    >>> backbone = TorchvisionResNetBackbone(depth=101, output_stride=8)
    >>> backbone(images)["C5"].shape   # (B, ceil(H/8), ceil(W/8), 2048)

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
    torchvision ``models/resnet.py`` (v1.5, ``replace_stride_with_dilation``).
    """

    def __init__(self, depth=50, output_stride=8, include_preprocessing=True,
                 kernel_regularizer=None, input_shape=(None, None, 3), **kwargs):
        if depth not in TORCHVISION_DEPTHS:
            raise ValueError(f"Unknown torchvision ResNet depth {depth!r}; expected one of "
                             f"{sorted(TORCHVISION_DEPTHS)}.")
        dilate = replace_stride_with_dilation(output_stride)
        reg = keras.regularizers.get(kernel_regularizer)
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("torch", name="normalization")(inputs) if include_preprocessing else inputs
        x = _conv(x, 64, 7, "conv1", stride=2, reg=reg)
        x = _bn("bn1")(x)
        x = keras.layers.ReLU(name="relu")(x)
        # Zero padding equals torch's -inf padding here: the input is post-ReLU (>= 0).
        x = keras.layers.ZeroPadding2D(1, name="maxpool-pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)

        features, dilation, in_channels = {}, 1, 64
        for stage, blocks in enumerate(TORCHVISION_DEPTHS[depth]):
            planes = 64 * 2**stage
            stride = 1 if stage == 0 else 2
            previous = dilation
            if stage > 0 and dilate[stage - 1]:
                dilation *= stride
                stride = 1
            for unit in range(blocks):
                x = _bottleneck(
                    x, planes,
                    stride=stride if unit == 0 else 1,
                    dilation=previous if unit == 0 else dilation,
                    downsample=unit == 0 and (stride != 1 or in_channels != 4 * planes),
                    name=f"layer{stage + 1}-{unit}",
                    reg=reg,
                )
            in_channels = 4 * planes
            features[f"C{stage + 2}"] = x
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self._set_backbone_attributes(output_stride, input_shape)
        self.depth = depth
        self.include_preprocessing = include_preprocessing
        self.kernel_regularizer = reg

    def _backbone_config(self):
        return {
            "depth": self.depth,
            "output_stride": self.output_stride,
            "include_preprocessing": self.include_preprocessing,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }
