"""DeepLab's aligned Xception-65 and the split separable conv blocks against the ORIGINAL
semantics (tensorflow/models research/deeplab/core/xception.py, core/utils.py), re-derived
here in NumPy: ``fixed_padding`` (pad k_eff - 1 in total, begin = total // 2, then VALID)
versus TF "SAME" padding, the xception_module (ReLU on the input of each separable conv,
depthwise -> BN -> pointwise -> BN, stride on the third, 1x1 strided shortcut on the
unactivated input), ``stack_blocks_dense``'s output-stride rule and the block table of
``xception_65``. Variables are addressed by their TF scope and found in our model by the
naming rule of the shared contract ("/" -> "-", BN = "<conv>-BatchNorm"), not by reading
our layers' structure.
"""

import keras
import numpy as np
import pytest
from _model_checks import (
    XCEPTION65_BLOCKS,
    check_config_round_trip,
    check_fit_step,
    check_keras_reload,
)

import keras_deeplab as kd
from keras_deeplab.layers import conv_bn, separable_conv_bn

# --- NumPy reference of the original semantics -----------------------------------------------


def fixed_pads(kernel_size, rate=1):
    """research/deeplab/core/xception.py ``fixed_padding``."""
    total = kernel_size + (kernel_size - 1) * (rate - 1) - 1
    return total // 2, total - total // 2


def same_pads(size, kernel_size, stride, rate=1):
    """TensorFlow's "SAME": output ceil(size / stride), the extra pixel at the end."""
    k_eff = kernel_size + (kernel_size - 1) * (rate - 1)
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def ceil_div(a, b):
    return -(-a // b)


def pad(x, ph, pw):
    return np.pad(x, ((0, 0), ph, pw, (0, 0)))


def conv_valid(x, w, stride=1, rate=1, depthwise=False):
    """VALID conv of NHWC ``x`` with a TF kernel (kh, kw, cin, cout) or, ``depthwise``,
    (kh, kw, cin, 1); float64."""
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - (kh - 1) * rate - 1) // stride + 1
    ow = (x.shape[2] - (kw - 1) * rate - 1) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * rate: i * rate + (oh - 1) * stride + 1: stride,
                      j * rate: j * rate + (ow - 1) * stride + 1: stride, :]
            out = out + (patch * w[i, j, :, 0] if depthwise else patch @ w[i, j])
    return out


def conv(x, w, stride=1, rate=1, padding="same", depthwise=False):
    """A conv as the original runs it: "fixed" (fixed_padding + VALID) or TF "same"."""
    k = w.shape[0]
    if padding == "fixed":
        ph = pw = fixed_pads(k, rate)
    else:
        ph, pw = same_pads(x.shape[1], k, stride, rate), same_pads(x.shape[2], k, stride, rate)
    return conv_valid(pad(x, ph, pw), w, stride, rate, depthwise)


def batch_norm(x, p, eps):
    gamma, beta, mean, var = p
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def random_variables(scopes_shapes, rng):
    """TF checkpoint-style variables: {scope: kernel}, {scope + "/BatchNorm": [g, b, m, v]}."""
    variables = {}
    for scope, shape in scopes_shapes:
        fan_in = np.prod(shape[:2]) * (shape[2] if shape[3] != 1 else 1)
        variables[scope] = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        c = shape[3] if shape[3] != 1 else shape[2]
        variables[scope + "/BatchNorm"] = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                                           rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)]
    return variables


def assign(model, variables):
    """Sets each TF variable on the Keras layer named by the contract's naming rule."""
    for scope, value in variables.items():
        layer = model.get_layer(scope.replace("/BatchNorm", "-BatchNorm").replace("/", "-"))
        layer.set_weights([np.asarray(v, "float32") for v in (value if isinstance(value, list)
                                                              else [value])])


ENTRY = "entry_flow/block1/unit_1/xception_module"


def entry_variables(rng):
    """The variables of xception_65's root and entry_flow/block1 (names and shapes as the
    original creates them: slim conv2d ``weights``, separable_conv2d ``depthwise_weights``)."""
    shapes = [("entry_flow/conv1_1", (3, 3, 3, 32)), ("entry_flow/conv1_2", (3, 3, 32, 64))]
    cin = 64
    for i in range(3):
        shapes += [(f"{ENTRY}/separable_conv{i + 1}_depthwise", (3, 3, cin, 1)),
                   (f"{ENTRY}/separable_conv{i + 1}_pointwise", (1, 1, cin, 128))]
        cin = 128
    shapes.append((f"{ENTRY}/shortcut", (1, 1, 64, 128)))
    return random_variables(shapes, rng)


def reference_entry(images, v, strided_padding):
    """xception_65 from [0, 255] images to the output of entry_flow/block1/unit_1 (the
    first strided xception_module, conv shortcut), strided convs padded ``"fixed"`` (the
    original) or ``"same"`` (what a naive port does)."""
    eps = 1e-3  # xception_arg_scope's batch_norm_epsilon
    x = 2.0 / 255.0 * images.astype("float64") - 1.0
    x = relu(batch_norm(conv(x, v["entry_flow/conv1_1"], 2, padding=strided_padding),
                        v["entry_flow/conv1_1/BatchNorm"], eps))
    x = relu(batch_norm(conv(x, v["entry_flow/conv1_2"]), v["entry_flow/conv1_2/BatchNorm"], eps))
    residual = x
    for i in range(1, 4):
        stride = 2 if i == 3 else 1
        scope = f"{ENTRY}/separable_conv{i}"
        residual = relu(residual)  # activation_fn_in_separable_conv=False: ReLU on the input
        residual = conv(residual, v[f"{scope}_depthwise"], stride, depthwise=True,
                        padding=strided_padding if stride > 1 else "same")
        residual = batch_norm(residual, v[f"{scope}_depthwise/BatchNorm"], eps)
        residual = conv(residual, v[f"{scope}_pointwise"])
        residual = batch_norm(residual, v[f"{scope}_pointwise/BatchNorm"], eps)
    shortcut = conv(x, v[f"{ENTRY}/shortcut"], 2)  # 1x1 stride 2 "SAME" on the unactivated input
    shortcut = batch_norm(shortcut, v[f"{ENTRY}/shortcut/BatchNorm"], eps)
    return residual + shortcut


@pytest.fixture(scope="module")
def backbone_os32():
    return kd.backbones.Xception65Backbone(output_stride=32)


@pytest.mark.parametrize("size", [32, 33])
def test_strided_unit_matches_the_original_fixed_padding(size, backbone_os32, rng):
    variables = entry_variables(rng)
    assign(backbone_os32, variables)
    # The unit's output is the (unactivated) input of the next unit's 1x1 shortcut conv.
    unit = keras.Model(backbone_os32.input, backbone_os32.get_layer(
        "entry_flow-block2-unit_1-xception_module-shortcut").input)
    # 32 x 36: every strided conv sees an even size; 33 x 37: an odd one (33 -> 17, 37 -> 19)
    images = rng.uniform(0, 255, (2, size, size + 4, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(unit(images, training=False))
    fixed = reference_entry(images, variables, "fixed")
    same = reference_entry(images, variables, "same")
    assert ours.shape == fixed.shape == (2, ceil_div(ceil_div(size, 2), 2),
                                         ceil_div(ceil_div(size + 4, 2), 2), 128)
    np.testing.assert_allclose(ours, fixed, atol=1e-4, rtol=1e-4)
    gap = np.abs(same - fixed).max()
    if size % 2 == 0:
        # Even sizes: SAME pads (0, 1) where fixed_padding pads (1, 1); the outputs differ
        # by far more than the tolerance, so a "same" implementation would fail above.
        assert gap > 0.1, gap
        assert np.abs(ours - same).max() > 0.1
    else:
        np.testing.assert_allclose(same, fixed, atol=1e-9)  # odd sizes: both pad (1, 1)


@pytest.mark.parametrize("size", [10, 11])
def test_separable_conv_bn_matches_split_separable_conv2d(size, rng):
    """core/utils.py ``split_separable_conv2d`` as the ASPP / decoder use it (ReLU after
    both BNs, rate 2, BN epsilon 1e-5, "SAME"), and a strided explicit-padding block."""
    x_in = keras.Input((None, None, 4))
    y_dilated = separable_conv_bn(x_in, 6, "aspp1", dilation_rate=2, depth_activation=True,
                                  bn_epsilon=1e-5)
    y_strided = separable_conv_bn(x_in, 5, "down", strides=2, explicit_padding=True)
    y_conv = conv_bn(x_in, 3, 3, "conv", strides=2, explicit_padding=True, activation="relu6")
    model = keras.Model(x_in, [y_dilated, y_strided, y_conv])
    v = random_variables([("aspp1_depthwise", (3, 3, 4, 1)), ("aspp1_pointwise", (1, 1, 4, 6)),
                          ("down_depthwise", (3, 3, 4, 1)), ("down_pointwise", (1, 1, 4, 5)),
                          ("conv", (3, 3, 4, 3))], rng)
    assign(model, v)
    x = rng.normal(size=(2, size, size + 1, 4)).astype("float32")
    ours = [keras.ops.convert_to_numpy(t) for t in model(x, training=False)]

    d = relu(batch_norm(conv(x, v["aspp1_depthwise"], rate=2, depthwise=True),
                        v["aspp1_depthwise/BatchNorm"], 1e-5))
    d = relu(batch_norm(conv(d, v["aspp1_pointwise"]), v["aspp1_pointwise/BatchNorm"], 1e-5))
    s = batch_norm(conv(x, v["down_depthwise"], 2, padding="fixed", depthwise=True),
                   v["down_depthwise/BatchNorm"], 1e-3)
    s = batch_norm(conv(s, v["down_pointwise"]), v["down_pointwise/BatchNorm"], 1e-3)
    c = np.clip(batch_norm(conv(x, v["conv"], 2, padding="fixed"), v["conv/BatchNorm"], 1e-3), 0, 6)
    for got, want in zip(ours, (d, s, c)):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


# --- the network: output-stride rule, shapes, parameters ---------------------------------------

SCOPES = ("entry_flow/block1", "entry_flow/block2", "entry_flow/block3", "middle_flow/block1",
          "exit_flow/block1", "exit_flow/block2")


def original_schedule(output_stride, multi_grid=(1, 1, 1)):
    """``xception()`` + ``stack_blocks_dense``: output_stride halved for the root, then a
    unit at the target stride runs with stride 1 at the current rate and multiplies the
    rate by its stride. Returns [(unit scope, stride, (rate of each separable conv))]."""
    target, current, rate = output_stride // 2, 1, 1
    units = []
    for scope, (_, _, num_units, stride) in zip(SCOPES, XCEPTION65_BLOCKS):
        unit_rates = multi_grid if scope == "exit_flow/block2" else (1, 1, 1)
        for u in range(num_units):
            if current == target:
                units.append((f"{scope}/unit_{u + 1}", 1, tuple(rate * m for m in unit_rates)))
                rate *= stride
            else:
                units.append((f"{scope}/unit_{u + 1}", stride, tuple(unit_rates)))
                current *= stride
    assert current == target
    return units


def original_feature_sizes(size, output_stride):
    """Spatial size of each end point: conv1_1 and every strided separable conv pad
    fixed_padding (2 for a 3x3 at rate 1) and run VALID: (n + 2 - 3) // 2 + 1."""
    def down(n):
        return (n + 2 - 3) // 2 + 1

    ends = {"entry_flow/block2/unit_1": "C3", "middle_flow/block1/unit_16": "C4",
            "exit_flow/block2/unit_1": "C5"}  # the last unit of each end-point block
    n = down(size)  # entry_flow/conv1_1
    sizes = {}
    for scope, stride, _ in original_schedule(output_stride):
        if scope == "entry_flow/block2/unit_1":
            sizes["C2"] = n  # separable_conv2_pointwise, before the unit's stride
        n = down(n) if stride == 2 else n
        if scope in ends:
            sizes[ends[scope]] = n
    return sizes


def test_original_schedule_reads_as_the_paper_says():
    """Sanity of the re-derived rule: DeepLabv3+ at OS16 runs exit flow block2 at rate 2,
    at OS8 the middle flow at rate 2 and exit_flow/block2 at rate 4 (x multi_grid)."""
    os16 = dict((s, (st, r)) for s, st, r in original_schedule(16))
    assert os16["exit_flow/block1/unit_1"] == (1, (1, 1, 1))
    assert os16["exit_flow/block2/unit_1"] == (1, (2, 2, 2))
    os8 = dict((s, (st, r)) for s, st, r in original_schedule(8, (1, 2, 4)))
    assert os8["middle_flow/block1/unit_7"] == (1, (2, 2, 2))
    assert os8["exit_flow/block2/unit_1"] == (1, (4, 8, 16))


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_strides_rates_and_feature_shapes_follow_stack_blocks_dense(output_stride, rng):
    multi_grid = (1, 2, 4)
    backbone = kd.backbones.Xception65Backbone(output_stride=output_stride, multi_grid=multi_grid)
    for scope, stride, rates in original_schedule(output_stride, multi_grid):
        for i in range(3):
            layer = backbone.get_layer(f"{scope}/xception_module/separable_conv{i + 1}_depthwise"
                                       .replace("/", "-"))
            assert layer.strides == ((stride, stride) if i == 2 else (1, 1)), (scope, i)
            assert layer.dilation_rate == (rates[i], rates[i]), (scope, i, layer.dilation_rate)
    nominal = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
    assert backbone.feature_strides == {k: min(s, output_stride) for k, s in nominal.items()}
    channels = {"C2": 256, "C3": 256, "C4": 728, "C5": 2048}
    for size in (65, 64):
        images = rng.uniform(0, 255, (1, size, size - 1, 3)).astype("float32")
        features = backbone(images)
        expected_h = original_feature_sizes(size, output_stride)
        expected_w = original_feature_sizes(size - 1, output_stride)
        for key in ("C2", "C3", "C4", "C5"):
            assert tuple(features[key].shape) == (1, expected_h[key], expected_w[key], channels[key])
            # and the documented strides hold: sizes are ceil(input / feature stride)
            stride = backbone.feature_strides[key]
            assert (expected_h[key], expected_w[key]) == (ceil_div(size, stride),
                                                          ceil_div(size - 1, stride))


def test_c2_is_the_decoder_end_point_before_any_relu(backbone_os32, rng):
    """feature_extractor.py's DECODER_END_POINTS for xception_65 is
    entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise: the pointwise BN
    output (no activation in the entry flow), so it takes negative values."""
    images = rng.uniform(0, 255, (1, 33, 33, 3)).astype("float32")
    c2 = keras.ops.convert_to_numpy(backbone_os32(images)["C2"])
    bn = backbone_os32.get_layer(
        "entry_flow-block2-unit_1-xception_module-separable_conv2_pointwise-BatchNorm")
    bn_output = keras.Model(backbone_os32.input, bn.output)(images)
    np.testing.assert_array_equal(c2, keras.ops.convert_to_numpy(bn_output))
    assert c2.min() < 0


def test_trainable_and_moving_statistics_counts(backbone_os32):
    from _model_checks import trainable_count, xception65_params

    expected = xception65_params()
    assert trainable_count(backbone_os32) == expected
    # every conv is followed by one batch norm: moving mean + variance = the BN's gamma + beta
    bn_channels = sum(layer.gamma.shape[0] for layer in backbone_os32.layers
                      if isinstance(layer, keras.layers.BatchNormalization))
    assert backbone_os32.count_params() == expected + 2 * bn_channels
    # 3 entry + 16 middle + 2 exit units of 3 separable convs (2 BNs each), the 2 root convs
    # and 4 conv shortcuts: 21 * 6 + 2 + 4 batch norms
    assert sum(isinstance(layer, keras.layers.BatchNormalization)
               for layer in backbone_os32.layers) == 21 * 6 + 2 + 4


# --- in the models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deeplab_os16():
    return kd.models.DeepLabV3Plus(num_classes=3, backbone="xception65", output_stride=16,
                                   aspp_filters=16, decoder_filters=16, low_level_filters=8)


def test_output_stride_switch_keeps_weights(deeplab_os16, rng):
    os8 = kd.models.with_output_stride(deeplab_os16, 8)
    for got, want in zip(os8.get_weights(), deeplab_os16.get_weights()):
        np.testing.assert_array_equal(got, want)
    backbone = os8.get_layer("xception_65")
    assert backbone.output_stride == 8
    rates = {scope: r for scope, _, r in original_schedule(8)}
    layer = backbone.get_layer("middle_flow-block1-unit_1-xception_module-separable_conv1_depthwise")
    assert layer.dilation_rate == (rates["middle_flow/block1/unit_1"][0],) * 2 == (2, 2)
    images = rng.uniform(0, 255, (1, 33, 33, 3)).astype("float32")
    assert os8.predict(images, verbose=0).shape == (1, 33, 33, 3)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        kd.models.with_output_stride(deeplab_os16, 4)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        kd.backbones.Xception65Backbone(output_stride=4)


def test_deeplab_xception65_config_round_trip(deeplab_os16):
    clone = check_config_round_trip(deeplab_os16)
    assert clone.get_layer("xception_65").get_config() == deeplab_os16.get_layer("xception_65").get_config()


@pytest.mark.large  # full Xception-65: a 150 MB .keras file and a traced training step (~45 s)
def test_deeplab_xception65_keras_reload_and_fit_step(deeplab_os16, tmp_path, rng):
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    check_keras_reload(deeplab_os16, images, str(tmp_path / "deeplab_xception65.keras"))
    check_fit_step(deeplab_os16, images)


def test_deeplabv3_xception65_builds_with_multi_grid(rng):
    model = kd.models.DeepLabV3(num_classes=2, backbone="xception65", multi_grid=(1, 2, 4),
                                output_stride=16, aspp_filters=8)
    backbone = model.get_layer("xception_65")
    assert backbone.multi_grid == (1, 2, 4)
    assert backbone.get_layer("exit_flow-block2-unit_1-xception_module-separable_conv3_depthwise"
                              ).dilation_rate == (8, 8)
    assert model.predict(rng.uniform(0, 255, (1, 33, 33, 3)).astype("float32"),
                         verbose=0).shape == (1, 33, 33, 2)


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="from_pretrained"):
        kd.backbones.get_backbone("xception65", weights="imagenet")
    with pytest.raises(ValueError, match="from_pretrained"):
        kd.models.DeepLabV3Plus(num_classes=3, backbone="xception65", backbone_weights="imagenet")
    with pytest.raises(ValueError, match="3 positive ints"):
        kd.backbones.Xception65Backbone(multi_grid=(1, 2))
    assert "xception65" in kd.backbones.NAMES
