"""Layer maths against NumPy references, TF-native dilation, config round-trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_deeplab as kd


def np_conv2d_same(x, kernel, rate=1, bias=None):
    """Reference NHWC stride-1 'same' convolution with dilation (odd kernels)."""
    kh, kw, cin, cout = kernel.shape
    ph, pw = rate * (kh - 1) // 2, rate * (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    b, h, w, _ = x.shape
    out = np.zeros((b, h, w, cout), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * rate : i * rate + h, j * rate : j * rate + w, :]
            out += patch @ kernel[i, j]
    if bias is not None:
        out += bias
    return out


def np_bn(x, gamma, beta, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _randomize_bn(layer, rng):
    for sub in layer._flatten_layers():
        if isinstance(sub, keras.layers.BatchNormalization):
            c = sub.gamma.shape[0]
            sub.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)]
            )


@pytest.mark.parametrize("rate", [1, 2, 3])
def test_atrous_conv_matches_numpy_and_keras(rate, rng):
    x = rng.normal(size=(2, 11, 13, 4)).astype("float32")
    layer = kd.layers.AtrousConv2D(5, 3, dilation_rate=rate, padding="same")
    plain = keras.layers.Conv2D(5, 3, dilation_rate=rate, padding="same")
    y = layer(x)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(y, np_conv2d_same(x, kernel, rate, bias), atol=1e-4)
    np.testing.assert_allclose(y, plain(x), atol=1e-5)


def test_atrous_conv_takes_native_dilated_op_on_tensorflow():
    layer = kd.layers.AtrousConv2D(8, 3, dilation_rate=12, padding="same")
    fn = tf.function(lambda t: layer(t))
    graph = fn.get_concrete_function(tf.TensorSpec((1, None, None, 4))).graph
    ops = {op.type for op in graph.get_operations()}
    assert "Conv2D" in ops
    assert not ops & {"SpaceToBatchND", "BatchToSpaceND"}, ops
    conv = next(op for op in graph.get_operations() if op.type == "Conv2D")
    assert list(conv.get_attr("dilations")) == [1, 12, 12, 1]


def test_atrous_depthwise_matches_keras_and_exports_native(rng):
    x = rng.normal(size=(1, 12, 12, 6)).astype("float32")
    layer = kd.layers.AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=True)
    plain = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=True)
    y = layer(x)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(y, plain(x), atol=1e-5)
    layer.native_dilation = True  # what kd.export.tflite sets while tracing
    graph = tf.function(lambda t: layer(t)).get_concrete_function(
        tf.TensorSpec((1, None, None, 6))
    ).graph
    layer.native_dilation = False
    ops = {op.type for op in graph.get_operations()}
    assert "DepthwiseConv2dNative" in ops and "SpaceToBatchND" not in ops


def test_aspp_matches_numpy_reference(rng):
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    aspp = kd.layers.ASPP(filters=3, rates=(2, 3), dropout=0.5)
    aspp.build(x.shape)
    for w in aspp.weights:
        if "kernel" in w.path:
            w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    _randomize_bn(aspp, rng)
    y = keras.ops.convert_to_numpy(aspp(x, training=False))

    def block(t, layer):
        kernel = layer._layers_seq[0].get_weights()[0]
        gamma, beta, mean, var = layer._layers_seq[1].get_weights()
        rate = layer.dilation_rate
        return np.maximum(np_bn(np_conv2d_same(t, kernel, rate), gamma, beta, mean, var, 1e-5), 0)

    branches = [block(x, b) for b in aspp.branches]
    pooled = block(x.mean(axis=(1, 2), keepdims=True), aspp.pool_conv)
    branches.append(np.broadcast_to(pooled, branches[0].shape))
    expected = block(np.concatenate(branches, axis=-1), aspp.project)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert [b.dilation_rate for b in aspp.branches] == [1, 2, 3]


@pytest.mark.parametrize("head", ["conv", "fc"])
def test_aspp_v2_sums_branch_logits(head, rng):
    x = rng.normal(size=(1, 10, 10, 4)).astype("float32")
    layer = kd.layers.ASPPV2(num_classes=3, rates=(1, 2, 4), head=head, fc_filters=5)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    total = 0
    for branch in layer.branches:
        t = x
        for sub in branch:
            if isinstance(sub, keras.layers.Dropout):
                continue
            kernel, bias = sub.get_weights()
            t = np_conv2d_same(t, kernel, sub.dilation_rate[0], bias)
            if sub.activation.__name__ == "relu":
                t = np.maximum(t, 0)
        total = total + t
    np.testing.assert_allclose(y, total, rtol=1e-4, atol=1e-4)


def test_decoder_fuses_upsampled_features(rng):
    high = rng.normal(size=(1, 3, 4, 6)).astype("float32")
    low = rng.normal(size=(1, 9, 13, 5)).astype("float32")
    dec = kd.layers.DeepLabV3PlusDecoder(filters=4, low_level_filters=2, num_convs=2)
    y = dec([high, low], training=False)
    assert tuple(y.shape) == (1, 9, 13, 4)
    # With the refinement convs removed the output is [resize(high), proj(low)].
    dec0 = kd.layers.DeepLabV3PlusDecoder(filters=4, low_level_filters=2, num_convs=0)
    y0 = keras.ops.convert_to_numpy(dec0([high, low], training=False))
    np.testing.assert_allclose(y0[..., :6], tf.image.resize(high, (9, 13)).numpy(), atol=1e-5)
    assert y0.shape[-1] == 8


def test_resize_like_with_unknown_shapes_under_tracing(rng):
    layer = kd.layers.ResizeLike()
    fn = tf.function(lambda a, b: layer([a, b])).get_concrete_function(
        tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None, None, None, 1))
    )
    x = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    ref = np.zeros((2, 17, 23, 1), "float32")
    out = fn(tf.constant(x), tf.constant(ref))
    np.testing.assert_allclose(out, tf.image.resize(x, (17, 23)), atol=1e-6)


def np_resize_nearest(x, size):
    """NumPy nearest resize with half-pixel centres: out[i] = in[floor((i + 0.5) * in / out)]."""
    h, w = x.shape[1:3]
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return x[:, rows][:, :, cols]


@pytest.mark.parametrize("src,dst", [((2, 2), (17, 23)), ((5, 7), (17, 23)), ((13, 11), (4, 6)),
                                     ((9, 9), (9, 9))])
def test_resize_like_nearest_equals_numpy_half_pixel_reference(src, dst, rng):
    # Class ids: every output value must be the id of the source pixel under the centre.
    x = rng.integers(0, 19, size=(2, *src, 2)).astype("float32")
    ref = np.zeros((2, *dst, 1), "float32")
    out = keras.ops.convert_to_numpy(kd.layers.ResizeLike("nearest")([x, ref]))
    np.testing.assert_array_equal(out, np_resize_nearest(x, dst))


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_image_normalization_matches_keras_applications(mode, rng):
    x = rng.uniform(0, 255, size=(2, 5, 5, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(kd.layers.ImageNormalization(mode)(x))
    ref = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_image_normalization_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="Expected RGB images with 3 channels"):
        kd.layers.ImageNormalization()(np.zeros((1, 4, 4, 4), "float32"))


LAYERS = [
    lambda: kd.layers.AtrousConv2D(4, 3, dilation_rate=2, padding="same"),
    lambda: kd.layers.AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same"),
    lambda: kd.layers.ConvBNReLU(4, 3, dilation_rate=2, separable=True),
    lambda: kd.layers.ASPP(4, rates=(1, 2), dropout=0.2, separable=True),
    lambda: kd.layers.ASPPV2(3, rates=(1, 2), head="fc", fc_filters=4),
    lambda: kd.layers.ImageNormalization("tf"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_layer_config_round_trip(make, rng):
    layer = make()
    x = rng.uniform(0, 255, size=(1, 8, 8, 3)).astype("float32")
    y = layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    kwargs = {"training": False} if "training" in layer.call.__code__.co_varnames else {}
    np.testing.assert_allclose(clone(x, **kwargs), layer(x, **kwargs), atol=1e-6)
    assert y.shape == clone(x).shape
    # Registered under the package, so .keras files find them.
    name = keras.saving.get_registered_name(type(layer))
    assert name.startswith("keras_deeplab>")


def np_conv2d_same_grads(x, kernel, rate, dy):
    """NumPy gradients of ``np_conv2d_same`` w.r.t. the input, kernel and bias given ``dy``."""
    kh, kw = kernel.shape[:2]
    ph, pw = rate * (kh - 1) // 2, rate * (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))).astype(np.float64)
    dxp = np.zeros_like(xp)
    dk = np.zeros(kernel.shape, np.float64)
    _, h, w, _ = x.shape
    for i in range(kh):
        for j in range(kw):
            rows, cols = slice(i * rate, i * rate + h), slice(j * rate, j * rate + w)
            dk[i, j] = np.einsum("bhwc,bhwo->co", xp[:, rows, cols], dy)
            dxp[:, rows, cols] += dy @ kernel[i, j].T
    return dxp[:, ph:ph + h, pw:pw + w], dk, dy.sum(axis=(0, 1, 2))


@pytest.mark.parametrize("rate", [2, 3])
def test_atrous_conv_gradients_match_numpy(rate, rng):
    """TF's CPU kernels have no dilated backprop, so the layer defines its own gradient:
    check it against the NumPy gradient of the dilated convolution (an independent
    formula: a sum over kernel taps, not space-to-batch)."""
    x = rng.normal(size=(2, 10, 12, 3)).astype("float32")
    layer = kd.layers.AtrousConv2D(4, 3, dilation_rate=rate, padding="same")
    layer.build(x.shape)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.sin(layer(xt)))
    dx, dk, db = tape.gradient(loss, [xt, layer.kernel, layer.bias])
    kernel, bias = layer.get_weights()
    dy = np.cos(np_conv2d_same(x, kernel, rate, bias))  # d sum(sin(y)) / dy
    ref_dx, ref_dk, ref_db = np_conv2d_same_grads(x, kernel, rate, dy)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(dk, ref_dk, atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(db, ref_db, atol=1e-3, rtol=1e-4)
