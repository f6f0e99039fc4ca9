"""Dilated ResNet v1 backbones (keras.applications layout, output stride 8 / 16 / 32)."""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.dilation import stage_strides_and_rates
from keras_deeplab.layers.atrous_conv import AtrousConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.utils import check_output_stride, register

DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_BN_EPS = 1.001e-5  # keras.applications' value, so ImageNet statistics reproduce exactly


def _bn(name, momentum):
    return BatchNormalization(epsilon=_BN_EPS, momentum=momentum, name=name)


def _bottleneck(x, filters, stride, rate, name, shortcut_conv, momentum, reg):
    if shortcut_conv:
        shortcut = keras.layers.Conv2D(
            4 * filters, 1, strides=stride, name=f"{name}_0_conv", kernel_regularizer=reg
        )(x)
        shortcut = _bn(f"{name}_0_bn", momentum)(shortcut)
    else:
        shortcut = x
    x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv", kernel_regularizer=reg)(x)
    x = _bn(f"{name}_1_bn", momentum)(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = AtrousConv2D(
        filters, 3, padding="same", dilation_rate=rate, name=f"{name}_2_conv", kernel_regularizer=reg
    )(x)
    x = _bn(f"{name}_2_bn", momentum)(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv", kernel_regularizer=reg)(x)
    x = _bn(f"{name}_3_bn", momentum)(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def _basic(x, filters, stride, rate, name, shortcut_conv, momentum, reg):
    if shortcut_conv:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv", kernel_regularizer=reg
        )(x)
        shortcut = _bn(f"{name}_0_bn", momentum)(shortcut)
    else:
        shortcut = x
    x = AtrousConv2D(
        filters, 3, strides=stride, padding="same", dilation_rate=rate, use_bias=False,
        name=f"{name}_1_conv", kernel_regularizer=reg,
    )(x)
    x = _bn(f"{name}_1_bn", momentum)(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = AtrousConv2D(
        filters, 3, padding="same", dilation_rate=rate, use_bias=False,
        name=f"{name}_2_conv", kernel_regularizer=reg,
    )(x)
    x = _bn(f"{name}_2_bn", momentum)(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


@register
class ResNetBackbone(Backbone):
    """Dilated ResNet v1 that returns a dict of feature maps.

    The layout (layer names, biases, BN epsilon, stride on the first 1x1 conv) is that of
    ``keras.applications.ResNet50/101/152``, so their ImageNet weights load unchanged (see
    ``keras_deeplab.backbones.load_imagenet_weights``); dilation adds no parameters.
    For ``output_stride`` 16 the stride of stage conv5 is removed and its 3x3 convs use
    rate 2; for 8, conv4 uses rate 2 and conv5 rate 4. ``multi_grid`` multiplies the
    rates of the conv5 units (DeepLabv3: (1, 2, 4) -> rates 2, 4, 8 at OS16).

    Outputs the `Backbone` feature dict: ``"C2"`` .. ``"C5"`` are the outputs of stages
    conv2 .. conv5 (keras.applications' ``conv{i}_block{n}_out``), at strides 4, 8, 16, 32
    for output stride 32; 4, 8, 16, 16 for 16; 4, 8, 8, 8 for 8 (``feature_strides``).

    Args:
        depth: int or None. 18, 34 (basic blocks), 50, 101, 152 (bottlenecks). None with
            ``stage_blocks`` for a custom depth. Defaults to 50.
        stage_blocks: tuple of 4 ints or None. Units per stage, overriding ``depth``
            (e.g. (3, 8, 36, 4) for a "ResNet-156"). Defaults to None.
        block_type: str or None. "bottleneck" or "basic"; defaults to the depth's type.
        base_filters: int. Width of the first stage (64 in the paper). Defaults to 64.
        output_stride: int. 8, 16 or 32. Defaults to 32.
        multi_grid: tuple of ints or None. Rate multipliers of the last stage's units;
            its length must equal the number of conv5 units. Defaults to None (all 1).
        include_preprocessing: bool. Normalise [0, 255] RGB input inside. Defaults to True.
        bn_momentum: float. Defaults to 0.99.
        kernel_regularizer: Optional regularizer for all kernels. Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy (name or `keras.DTypePolicy`) to build under. Defaults to the
            global policy; kept in ``get_config()``.

    Example:
    >>> backbone = ResNetBackbone(depth=101, output_stride=16, multi_grid=(1, 2, 4))
    >>> features = backbone(images)   # features["C5"]: (B, H/16, W/16, 2048)

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
    Chen et al., arXiv:1706.05587 (multi-grid).
    """

    def __init__(
        self,
        depth=50,
        stage_blocks=None,
        block_type=None,
        base_filters=64,
        output_stride=32,
        multi_grid=None,
        include_preprocessing=True,
        bn_momentum=0.99,
        kernel_regularizer=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        if stage_blocks is None:
            if depth not in DEPTHS:
                raise ValueError(
                    f"Unknown ResNet depth {depth!r}; expected one of {sorted(DEPTHS)} or a "
                    "custom `stage_blocks=(n2, n3, n4, n5)`."
                )
            default_type, stage_blocks = DEPTHS[depth]
        else:
            stage_blocks = tuple(int(n) for n in stage_blocks)
            if len(stage_blocks) != 4 or min(stage_blocks) < 1:
                raise ValueError(f"stage_blocks must be 4 positive ints, got {stage_blocks!r}.")
            default_type = "bottleneck"
        block_type = block_type or default_type
        if block_type not in ("basic", "bottleneck"):
            raise ValueError(f"block_type must be 'basic' or 'bottleneck', got {block_type!r}.")
        output_stride = check_output_stride(output_stride)
        if multi_grid is not None:
            multi_grid = tuple(int(m) for m in multi_grid)
            if len(multi_grid) != stage_blocks[-1]:
                raise ValueError(
                    f"multi_grid {multi_grid} needs one rate per unit of the last stage "
                    f"({stage_blocks[-1]} units)."
                )
        reg = keras.regularizers.get(kernel_regularizer)
        block_fn = _bottleneck if block_type == "bottleneck" else _basic

        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("caffe", name="normalization")(inputs) if include_preprocessing else inputs
        x = keras.layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(x)
        x = keras.layers.Conv2D(
            base_filters, 7, strides=2, use_bias=block_type == "bottleneck", name="conv1_conv",
            kernel_regularizer=reg,
        )(x)
        x = _bn("conv1_bn", bn_momentum)(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)
        x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

        strides, rates = stage_strides_and_rates((1, 2, 2, 2), output_stride, initial_stride=4)
        features = {}
        in_channels = base_filters
        for stage, blocks in enumerate(stage_blocks):
            filters = base_filters * 2**stage
            out_channels = 4 * filters if block_type == "bottleneck" else filters
            for unit in range(blocks):
                rate = rates[stage]
                if stage == 3 and multi_grid is not None:
                    rate *= multi_grid[unit]
                x = block_fn(
                    x,
                    filters,
                    stride=strides[stage] if unit == 0 else 1,
                    rate=rate,
                    name=f"conv{stage + 2}_block{unit + 1}",
                    shortcut_conv=unit == 0
                    and (strides[stage] != 1 or in_channels != out_channels or block_type == "bottleneck"),
                    momentum=bn_momentum,
                    reg=reg,
                )
            in_channels = out_channels
            features[f"C{stage + 2}"] = x
        super().__init__(inputs=inputs, outputs=features, **kwargs)

        self._set_backbone_attributes(output_stride, input_shape)
        self.depth = depth
        self.stage_blocks = stage_blocks
        self.block_type = block_type
        self.base_filters = base_filters
        self.multi_grid = multi_grid
        self.include_preprocessing = include_preprocessing
        self.bn_momentum = bn_momentum
        self.kernel_regularizer = reg
        self.stage_rates = tuple(rates)

    @property
    def keras_application(self):
        """Name of the keras.applications model whose weights fit, or None."""
        if self.block_type == "bottleneck" and self.base_filters == 64:
            for depth, (_, blocks) in DEPTHS.items():
                if blocks == self.stage_blocks and depth >= 50:
                    return f"ResNet{depth}"
        return None

    def _backbone_config(self):
        return {
            "depth": self.depth,
            "stage_blocks": self.stage_blocks,
            "block_type": self.block_type,
            "base_filters": self.base_filters,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "include_preprocessing": self.include_preprocessing,
            "bn_momentum": self.bn_momentum,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }
