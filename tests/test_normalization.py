"""keras_deeplab.layers.BatchNormalization (TF's FusedBatchNormV3 with Keras semantics) against
two independent references: Keras' own keras.layers.BatchNormalization with identical weights,
and a float64 NumPy implementation written here (batch statistics with the biased variance,
the moving-average update, the inference formula, the analytic gradients)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.layers.normalization import FUSED_BN_ENV, BatchNormalization

SHAPE = (4, 5, 7, 6)  # N, H, W, C: n = N*H*W = 140 values per channel
MOMENTUM = 0.9
BF16_ULP = 2.0**-7  # spacing of bfloat16 numbers relative to their magnitude (8-bit mantissa)


# -- NumPy reference (float64) -----------------------------------------------------------------


def np_batch_stats(x):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(0, 1, 2))
    variance = ((x - mean) ** 2).mean(axis=(0, 1, 2))  # biased: divided by n
    return mean, variance


def np_normalize(x, mean, variance, gamma, beta, eps):
    return (np.asarray(x, np.float64) - mean) / np.sqrt(variance + eps) * gamma + beta


def np_moving(moving, batch, momentum=MOMENTUM):
    return moving * momentum + batch * (1.0 - momentum)


def np_train_grads(x, dy, gamma, eps):
    """d loss / d (x, gamma, beta) of training-mode batch norm for loss = sum(y * dy)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    mean, variance = np_batch_stats(x)
    inv = 1.0 / np.sqrt(variance + eps)
    xhat = (x - mean) * inv
    axes = (0, 1, 2)
    dx = gamma * inv * (dy - dy.mean(axes) - xhat * (dy * xhat).mean(axes))
    return dx, (dy * xhat).sum(axes), dy.sum(axes)


# -- helpers -----------------------------------------------------------------------------------


def _weights(channels, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(1.0, 0.3, channels), rng.normal(0.0, 0.5, channels),
            rng.normal(0.0, 0.2, channels), rng.uniform(0.5, 2.0, channels)]


def _pair(eps, dtype="float32", shape=SHAPE, seed=0):
    """Keras' layer and ours, built, with the same random gamma, beta and moving statistics."""
    weights = [w.astype("float32") for w in _weights(shape[-1], seed)]
    layers = []
    for cls in (keras.layers.BatchNormalization, BatchNormalization):
        layer = cls(epsilon=eps, momentum=MOMENTUM, dtype=dtype)
        layer.build(shape)
        layer.set_weights(weights)
        layers.append(layer)
    return layers, [w.astype(np.float64) for w in weights]


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(1.5, 3.0, shape).astype("float32"), rng.normal(0.0, 1.0, shape).astype("float32")


def _train_step(layer, x, dy, graph):
    """Training call with the gradient of sum(y * dy) w.r.t. (x, gamma, beta)."""

    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))

    fn = tf.function(step) if graph else step
    x = tf.cast(tf.constant(x), layer.compute_dtype)
    return [np.asarray(tf.cast(t, tf.float32)) for t in fn(x, tf.constant(dy))]


def _close(got, want, rel, what):
    """max |got - want| <= rel * max |want| (want is the reference)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max())
    assert err <= rel * scale, f"{what}: max |diff| {err:.3g} > {rel:g} * {scale:.3g}"


def _op_types(layer, training, shape=(None, 5, 7, 6), dtype=tf.float32):
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, dtype)).graph
    return [op.type for op in graph.get_operations()]


# -- float32 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_float32_training_inference_and_moving_statistics(eps, graph):
    (stock, ours), (gamma, beta, moving_mean, moving_var) = _pair(eps)
    for step in range(3):  # different batches; the moving statistics are compared after each
        x, dy = _inputs(SHAPE, seed=10 + step)
        mean, var = np_batch_stats(x)
        y, dx, dgamma, dbeta = _train_step(ours, x, dy, graph)
        y_k, dx_k, dgamma_k, dbeta_k = _train_step(stock, x, dy, graph)
        _close(y, np_normalize(x, mean, var, gamma, beta, eps), 1e-6, "training output vs NumPy")
        _close(y, y_k, 1e-6, "training output vs Keras")
        np_dx, np_dgamma, np_dbeta = np_train_grads(x, dy, gamma, eps)
        for got, keras_ref, np_ref, what in ((dx, dx_k, np_dx, "d/dx"),
                                             (dgamma, dgamma_k, np_dgamma, "d/dgamma"),
                                             (dbeta, dbeta_k, np_dbeta, "d/dbeta")):
            _close(got, keras_ref, 1e-5, f"{what} vs Keras")
            _close(got, np_ref, 1e-5, f"{what} vs NumPy")
        moving_mean, moving_var = np_moving(moving_mean, mean), np_moving(moving_var, var)
        _close(ours.moving_mean, moving_mean, 1e-6, "moving mean vs NumPy")
        _close(ours.moving_variance, moving_var, 1e-6, "moving variance vs NumPy (biased)")
        _close(ours.moving_mean, stock.moving_mean, 1e-6, "moving mean vs Keras")
        _close(ours.moving_variance, stock.moving_variance, 1e-6, "moving variance vs Keras")

    x, _ = _inputs(SHAPE, seed=20)
    call = tf.function(lambda layer, x: layer(x, training=False)) if graph else \
        (lambda layer, x: layer(x, training=False))
    y = call(ours, tf.constant(x))
    _close(y, np_normalize(x, moving_mean, moving_var, gamma, beta, eps), 1e-6, "inference vs NumPy")
    _close(y, call(stock, tf.constant(x)), 1e-6, "inference vs Keras")
    _close(ours.moving_mean, moving_mean, 1e-6, "inference leaves the moving mean")


def test_trainable_false_is_inference():
    """Frozen BN (fine-tuning): training=True normalizes with the moving statistics, leaves
    them unchanged, and back-propagates through the inference formula."""
    eps = 1e-5
    (stock, ours), (gamma, beta, moving_mean, moving_var) = _pair(eps)
    stock.trainable = ours.trainable = False
    x, dy = _inputs(SHAPE, seed=3)
    grads = {}
    for name, layer in (("stock", stock), ("ours", ours)):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * dy)
        grads[name] = (y, tape.gradient(loss, xt))
    y, dx = grads["ours"]
    _close(y, np_normalize(x, moving_mean, moving_var, gamma, beta, eps), 1e-6, "output vs NumPy")
    _close(y, grads["stock"][0], 1e-6, "output vs Keras")
    _close(dx, dy * gamma / np.sqrt(moving_var + eps), 1e-6, "d/dx vs NumPy")
    _close(dx, grads["stock"][1], 1e-6, "d/dx vs Keras")
    np.testing.assert_array_equal(ours.moving_mean, moving_mean.astype("float32"))
    np.testing.assert_array_equal(ours.moving_variance, moving_var.astype("float32"))
    assert "FusedBatchNormV3" in _op_types(ours, training=True)


def test_single_value_per_channel_moving_statistics():
    """n = N*H*W = 1 (image pooling at batch 1): batch variance 0, no (n-1)/n correction."""
    (stock, ours), (_, _, moving_mean, moving_var) = _pair(1e-5, shape=(1, 1, 1, 6))
    x, _ = _inputs((1, 1, 1, 6), seed=4)
    ours(tf.constant(x), training=True)
    stock(tf.constant(x), training=True)
    _close(ours.moving_mean, np_moving(moving_mean, x.reshape(-1)), 1e-6, "moving mean")
    _close(ours.moving_variance, np_moving(moving_var, 0.0), 1e-6, "moving variance")
    _close(ours.moving_variance, stock.moving_variance, 1e-6, "moving variance vs Keras")


def test_empty_batch_returns_empty_and_keeps_moving_statistics():
    (_, ours), (_, _, moving_mean, moving_var) = _pair(1e-3)
    step = tf.function(lambda x: ours(x, training=True),
                       input_signature=[tf.TensorSpec((None, None, None, 6), tf.float32)])
    for shape in ((0, 5, 7, 6), (2, 0, 7, 6)):
        assert tuple(step(tf.zeros(shape)).shape) == shape
        assert tuple(ours(tf.zeros(shape), training=True).shape) == shape  # eager, static shape
        assert tuple(ours(tf.zeros(shape), training=False).shape) == shape
    np.testing.assert_array_equal(ours.moving_mean, moving_mean.astype("float32"))
    np.testing.assert_array_equal(ours.moving_variance, moving_var.astype("float32"))


# -- mixed_bfloat16 ----------------------------------------------------------------------------


def test_mixed_bfloat16_matches_keras_to_bf16_rounding_and_feeds_bf16_to_the_kernel():
    eps = 1e-5
    (stock, ours), (gamma, beta, moving_mean, moving_var) = _pair(eps, dtype="mixed_bfloat16")
    assert ours.compute_dtype == "bfloat16"

    def bf16_close(got, want, what):
        # one bfloat16 rounding of each element, plus float32 round-off of the scale
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        bound = BF16_ULP * np.abs(want) + 1e-5 * np.abs(want).max()
        assert np.all(np.abs(got - want) <= bound), f"{what}: max |diff| {np.abs(got - want).max():.3g}"

    for step in range(2):
        x, dy = _inputs(SHAPE, seed=30 + step)
        x = np.asarray(tf.cast(tf.cast(x, tf.bfloat16), tf.float32))  # the values the layers see
        mean, var = np_batch_stats(x)
        y, dx, dgamma, dbeta = _train_step(ours, x, dy, graph=True)
        y_k, dx_k, dgamma_k, dbeta_k = _train_step(stock, x, dy, graph=True)
        bf16_close(y, y_k, "training output vs Keras")
        bf16_close(y, np_normalize(x, mean, var, gamma, beta, eps), "training output vs NumPy")
        bf16_close(dx, dx_k, "d/dx vs Keras")
        _close(dgamma, dgamma_k, 1e-5, "d/dgamma vs Keras")  # float32 weights
        _close(dbeta, dbeta_k, 1e-5, "d/dbeta vs Keras")
        moving_mean, moving_var = np_moving(moving_mean, mean), np_moving(moving_var, var)
        _close(ours.moving_mean, moving_mean, 1e-6, "moving mean vs NumPy")
        _close(ours.moving_variance, moving_var, 1e-6, "moving variance vs NumPy")
        _close(ours.moving_variance, stock.moving_variance, 1e-6, "moving variance vs Keras")
    x = tf.cast(_inputs(SHAPE, seed=40)[0], tf.bfloat16)
    y = ours(x, training=False)
    assert y.dtype == tf.bfloat16
    bf16_close(tf.cast(y, tf.float32), tf.cast(stock(x, training=False), tf.float32), "inference vs Keras")
    bf16_close(tf.cast(y, tf.float32),
               np_normalize(tf.cast(x, tf.float32), moving_mean, moving_var, gamma, beta, eps),
               "inference vs NumPy")

    # The kernel takes the bfloat16 activations directly (T=bfloat16, U=float32): no cast of x.
    for training in (True, False):
        graph = tf.function(lambda x, t=training: ours(x, training=t)).get_concrete_function(
            tf.TensorSpec((None, 5, 7, 6), tf.bfloat16)).graph
        fused = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
        assert len(fused) == 1
        assert fused[0].get_attr("T") == tf.bfloat16 and fused[0].get_attr("U") == tf.float32
        assert fused[0].inputs[0].op.type == "Placeholder"


# -- which path runs ---------------------------------------------------------------------------


def test_env_switch_and_fallbacks_select_keras_computation(monkeypatch):
    layer = BatchNormalization()
    layer.build((None, 5, 7, 6))
    monkeypatch.delenv(FUSED_BN_ENV, raising=False)
    for training in (True, False):
        assert _op_types(layer, training).count("FusedBatchNormV3") == 1
    stock = keras.layers.BatchNormalization.from_config(layer.get_config())
    stock.build((None, 5, 7, 6))
    monkeypatch.setenv(FUSED_BN_ENV, "0")  # read at trace time
    for training in (True, False):
        ops = _op_types(layer, training)
        assert "FusedBatchNormV3" not in ops
        assert ops == _op_types(stock, training)  # exactly Keras' graph
    monkeypatch.setenv(FUSED_BN_ENV, "1")
    assert "FusedBatchNormV3" in _op_types(layer, True)
    monkeypatch.setenv(FUSED_BN_ENV, "yes")
    with pytest.raises(ValueError, match=FUSED_BN_ENV):
        layer(tf.zeros((1, 5, 7, 6)))
    monkeypatch.delenv(FUSED_BN_ENV)

    synced = BatchNormalization(synchronized=True)
    synced.build((None, 5, 7, 6))
    assert "FusedBatchNormV3" not in _op_types(synced, True)
    flat = BatchNormalization()
    flat.build((None, 6))
    assert "FusedBatchNormV3" not in _op_types(flat, True, shape=(None, 6))
    first = BatchNormalization(axis=1)  # channels-first: Keras' computation
    first.build((None, 6, 5, 7))
    assert "FusedBatchNormV3" not in _op_types(first, True, shape=(None, 6, 5, 7))


def test_small_epsilon_keeps_keras_computation_when_a_gpu_is_visible(monkeypatch):
    """cuDNN's minimum epsilon is 1e-5: below 1.001e-5 a machine with a GPU uses Keras' path."""
    from keras_deeplab.layers import normalization

    monkeypatch.setattr(normalization, "_gpu_visible", lambda: True)
    for eps, fused in ((1e-5, False), (1.001e-5, True), (1e-3, True)):
        layer = BatchNormalization(epsilon=eps)
        layer.build((None, 5, 7, 6))
        assert ("FusedBatchNormV3" in _op_types(layer, True)) is fused, eps


# -- serialization -----------------------------------------------------------------------------


def test_config_round_trip_and_registration():
    layer = BatchNormalization(epsilon=1e-5, momentum=0.97, center=False, name="bn")
    assert keras.saving.get_registered_name(BatchNormalization) == "keras_deeplab>BatchNormalization"
    assert isinstance(layer, keras.layers.BatchNormalization)
    config = layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is BatchNormalization and clone.get_config() == config
    assert config == keras.layers.BatchNormalization(
        epsilon=1e-5, momentum=0.97, center=False, name="bn").get_config()


def _tiny_model(bn_class):
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = bn_class(epsilon=1e-5, momentum=MOMENTUM, name="bn")(x)
    return keras.Model(inp, keras.layers.ReLU()(x))


def _randomize_bn(model, seed):
    bn = model.get_layer("bn")
    bn.set_weights([w.astype("float32") for w in _weights(6, seed)])


def test_keras_file_round_trip(tmp_path):
    model = _tiny_model(BatchNormalization)
    _randomize_bn(model, seed=5)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("bn")) is BatchNormalization
    x = np.random.default_rng(6).normal(size=(2, 9, 11, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_allclose(loaded(x, training=training), model(x, training=training),
                                   rtol=1e-6, atol=1e-6)


def test_weights_saved_with_keras_batch_norm_load(tmp_path):
    stock = _tiny_model(keras.layers.BatchNormalization)
    _randomize_bn(stock, seed=7)
    path = str(tmp_path / "stock.keras")
    stock.save(path)
    ours = _tiny_model(BatchNormalization)
    ours.load_weights(path)
    for got, want in zip(ours.get_weights(), stock.get_weights()):
        np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(8).normal(size=(2, 9, 11, 3)).astype("float32")
    np.testing.assert_allclose(ours(x, training=False), stock(x, training=False), rtol=1e-5, atol=1e-5)
    # and the stock file itself still loads as what it was
    assert type(keras.saving.load_model(path).get_layer("bn")) is keras.layers.BatchNormalization


@pytest.mark.parametrize("training", [True, False])
def test_no_center_no_scale_with_unknown_channel_count_in_the_trace(training):
    # Traced with every dimension unknown, center=False / scale=False take the built weights'
    # shape for the unit gamma / zero beta (the input's channel count is None in the trace).
    x = _inputs(SHAPE, 3)[0]
    mean, variance = np_batch_stats(x)
    moving = _weights(SHAPE[-1], 0)[2:]
    layer = BatchNormalization(center=False, scale=False, epsilon=1e-3, momentum=MOMENTUM)
    layer.build(SHAPE)
    layer.set_weights([w.astype("float32") for w in moving])
    fn = tf.function(lambda t: layer(t, training=training),
                     input_signature=[tf.TensorSpec([None] * 4, tf.float32)])
    assert "FusedBatchNormV3" in [op.type for op in fn.get_concrete_function().graph.get_operations()]
    got = np.asarray(fn(tf.constant(x)))
    if training:
        want = np_normalize(x, mean, variance, 1.0, 0.0, 1e-3)
    else:
        want = np_normalize(x, moving[0], moving[1], 1.0, 0.0, 1e-3)
    _close(got, want, 1e-5, "output")
