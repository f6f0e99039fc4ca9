"""DeepLab's modified aligned Xception-65 backbone (output stride 8 / 16 / 32)."""

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.dilation import stage_strides_and_rates
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.layers.separable import conv_bn, separable_conv_bn
from keras_deeplab.utils import check_output_stride, register

#: The TF top scope of the network: the name of the backbone (sub-)model.
SCOPE = "xception_65"

#: xception_65 of research/deeplab/core/xception.py, one row per block:
#: (scope, depth_list, skip_connection_type, activation_fn_in_separable_conv, units, stride).
BLOCKS = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 1, 2),
    ("middle_flow/block1", (728, 728, 728), "sum", False, 16, 1),
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1, 1),
)

#: Feature key -> the TF end point it is (relative to ``xception_65/``). C2 is the end
#: point DeepLabv3+'s decoder reads (core/feature_extractor.py, DECODER_END_POINTS).
FEATURE_END_POINTS = {
    "C2": "entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
    "C3": "entry_flow/block2",
    "C4": "middle_flow/block1",
    "C5": "exit_flow/block2",
}


def _layer_name(scope):
    """Keras layer name of a TF scope: "/" written as "-" (Keras forbids "/")."""
    return scope.replace("/", "-")


def _xception_module(x, depths, skip, stride, rate, unit_rates, activation_in_separable,
                     name, reg, taps):
    """One ``xception_module``: three split separable convs (stride on the third) plus a
    skip connection ("conv": strided 1x1 conv + BN on the unit input, "sum": identity,
    "none"). Without ``activation_in_separable`` each separable conv's input goes through a
    ReLU first (the unit input itself stays unactivated for the skip). ``taps`` receives
    the output of each separable conv, by its pointwise scope."""
    residual = x
    for i, depth in enumerate(depths):
        scope = f"{name}-separable_conv{i + 1}"
        if not activation_in_separable:
            residual = keras.layers.ReLU(name=f"{scope}-input_relu")(residual)
        residual = separable_conv_bn(
            residual,
            depth,
            scope,
            strides=stride if i == 2 else 1,
            dilation_rate=rate * unit_rates[i],
            depth_activation=activation_in_separable,
            explicit_padding=True,
            kernel_regularizer=reg,
        )
        taps[f"{scope}_pointwise"] = residual
    if skip == "conv":
        shortcut = conv_bn(x, depths[-1], 1, f"{name}-shortcut", strides=stride, activation=None,
                           kernel_regularizer=reg)
        return keras.layers.Add(name=f"{name}-add")([residual, shortcut])
    if skip == "sum":
        return keras.layers.Add(name=f"{name}-add")([residual, x])
    return residual


def unit_schedule(output_stride, multi_grid=(1, 1, 1)):
    """(scope, stride, rate, unit_rates) of every unit of Xception-65 at ``output_stride``.

    The rule of the original ``stack_blocks_dense`` after the stride-2 root: a unit whose
    stride would take the network past ``output_stride`` runs with stride 1 at the rate
    reached before it, and the rate is multiplied by the dropped stride for the units after
    it. At OS16 exit_flow/block1 loses its stride (rate 1) and exit_flow/block2 runs at
    rate 2; at OS8 entry_flow/block3 loses it too and middle flow runs at rate 2, exit
    flow block1 at 2 and block2 at 4. ``multi_grid`` multiplies the rates of the three
    separable convs of exit_flow/block2 (``unit_rate_list``); other units use (1, 1, 1).
    """
    units = [(f"{scope}/unit_{u + 1}", stride)
             for scope, _, _, _, num_units, stride in BLOCKS for u in range(num_units)]
    strides, rates = stage_strides_and_rates([s for _, s in units], output_stride, initial_stride=2)
    schedule = []
    for i, (scope, _) in enumerate(units):
        # stage_strides_and_rates gives the rate after each unit; a unit runs at the rate
        # before it (its stride sits on its last conv, so its other convs come before it).
        rate = rates[i - 1] if i else 1
        unit_rates = tuple(multi_grid) if scope.startswith(BLOCKS[-1][0]) else (1, 1, 1)
        schedule.append((scope, strides[i], rate, unit_rates))
    return schedule


@register
class Xception65Backbone(Backbone):
    """DeepLab's modified aligned Xception-65, returning the `Backbone` feature dict.

    The Xception of Chollet (2017) made deeper and "aligned" by MSRA (Dai et al., COCO
    2017), as DeepLabv3+ uses it: every max pool replaced by a stride-2 separable conv, so
    strides beyond ``output_stride`` can become atrous rates; batch norm after each
    depthwise and each pointwise conv. The layout is that of ``xception_65`` in
    tensorflow/models research/deeplab/core/xception.py:

    - entry flow: ``conv1_1`` 3x3/32 stride 2 (explicit fixed padding, "valid"), BN, ReLU;
      ``conv1_2`` 3x3/64, BN, ReLU; three units (128, 256, 728 channels), each three
      separable convs with stride 2 on the third and a 1x1 strided conv shortcut;
    - middle flow: 16 units of three 728-channel separable convs with an identity skip;
    - exit flow: a (728, 1024, 1024) unit with stride 2 and conv shortcut, then a
      (1536, 1536, 2048) unit without skip whose separable convs carry ReLUs after both
      batch norms (the other units apply a ReLU to the input of each separable conv).

    Strided separable convs are padded as the original's ``fixed_padding`` (not TF
    "SAME": they differ by one pixel on even sizes), so model-zoo checkpoints give the
    original's features. Layer names are the TF scopes below ``xception_65`` with "/"
    written as "-" (e.g. ``entry_flow-block1-unit_1-xception_module-separable_conv1_depthwise``
    and its ``-BatchNorm``), and the model is named ``xception_65`` by default, so
    ``keras_deeplab.pretrained.tf_checkpoint`` maps checkpoint variables by name.

    Outputs (float, compute dtype of the policy; channels 256, 256, 728, 2048):

    ======  ===============================================================  ====  ====  ====
    key     TF end point (below ``xception_65/``)                            OS32  OS16  OS8
    ======  ===============================================================  ====  ====  ====
    ``C2``  entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise  4     4     4
    ``C3``  entry_flow/block2 (output)                                       8     8     8
    ``C4``  middle_flow/block1 (output)                                      16    16    8
    ``C5``  exit_flow/block2 (output)                                        32    16    8
    ======  ===============================================================  ====  ====  ====

    (``feature_strides``). ``C2`` is DeepLabv3+'s decoder end point: the pointwise batch
    norm output, before any ReLU. Sizes: ``ceil(H / stride)``.

    Args:
        output_stride: int. 8, 16 or 32. Defaults to 16.
        multi_grid: tuple of 3 ints or None. Rate multipliers of the three separable convs
            of exit_flow/block2 (the original's ``multi_grid``). None means (1, 1, 1).
            Defaults to None.
        include_preprocessing: bool. Scale [0, 255] RGB to [-1, 1] inside (the original's
            ``2 / 255 * x - 1``). Defaults to True.
        kernel_regularizer: Optional regularizer of the conv and pointwise kernels
            (the depthwise kernels are not regularized, as in the original with
            ``regularize_depthwise=False``). Defaults to None.
        input_shape: tuple. Defaults to (None, None, 3).
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.
        name: str. Defaults to "xception_65".

    Raises:
        ValueError: an output stride other than 8, 16 or 32, or a ``multi_grid`` that is
            not 3 positive ints.

    Example:
    >>> backbone = Xception65Backbone(output_stride=16)
    >>> backbone(images)["C5"].shape   # (B, ceil(H/16), ceil(W/16), 2048)

    Reference: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
    Image Segmentation", ECCV 2018; Chollet, "Xception: Deep Learning with Depthwise
    Separable Convolutions", CVPR 2017.
    """

    def __init__(
        self,
        output_stride=16,
        multi_grid=None,
        include_preprocessing=True,
        kernel_regularizer=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        output_stride = check_output_stride(output_stride)
        if multi_grid is not None:
            multi_grid = tuple(int(m) for m in multi_grid)
            if len(multi_grid) != 3 or min(multi_grid) < 1:
                raise ValueError(
                    f"Xception65Backbone: multi_grid={multi_grid} must be 3 positive ints, the "
                    "rate multipliers of the three separable convs of exit_flow/block2 "
                    "(e.g. (1, 2, 4)); None means (1, 1, 1).")
        kwargs.setdefault("name", SCOPE)
        reg = keras.regularizers.get(kernel_regularizer)
        schedule = unit_schedule(output_stride, multi_grid or (1, 1, 1))

        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization("tf", name="normalization")(inputs) if include_preprocessing else inputs
        x = conv_bn(x, 32, 3, "entry_flow-conv1_1", strides=2, explicit_padding=True,
                    kernel_regularizer=reg)
        x = conv_bn(x, 64, 3, "entry_flow-conv1_2", kernel_regularizer=reg)
        outputs, taps = {}, {}
        block_of = {row[0]: row for row in BLOCKS}
        for scope, stride, rate, unit_rates in schedule:
            block, _ = scope.rsplit("/", 1)
            _, depths, skip, activation_in_separable, num_units, _ = block_of[block]
            x = _xception_module(
                x, depths, skip, stride, rate, unit_rates, activation_in_separable,
                _layer_name(f"{scope}/xception_module"), reg, taps,
            )
            if scope.endswith(f"unit_{num_units}"):
                outputs[block] = x
        end_points = {**outputs, **{k.replace("-", "/"): v for k, v in taps.items()}}
        features = {key: end_points[point] for key, point in FEATURE_END_POINTS.items()}
        super().__init__(inputs=inputs, outputs=features, **kwargs)

        self._set_backbone_attributes(output_stride, input_shape)
        self.multi_grid = multi_grid
        self.include_preprocessing = include_preprocessing
        self.kernel_regularizer = reg
        #: (scope, stride, rate, unit_rates) of every unit, as built (see `unit_schedule`).
        self.units = tuple(schedule)

    def _backbone_config(self):
        return {
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "include_preprocessing": self.include_preprocessing,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "input_shape": self.image_shape,
        }
