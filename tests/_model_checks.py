"""Shared checks for every public layer, backbone and model (no tests here).

`check_public_class` runs, on one object factory:

1. config round trip: ``type(obj).from_config(obj.get_config())`` has the same config;
2. ``.keras`` save and reload (a layer inside a functional model): equal outputs;
3. trainable-weight count equal to an independent count, computed by the caller from the
   architecture's layer shapes (the ``*_params`` formulas below) or from keras.applications;
4. dtype policy: built under ``mixed_bfloat16`` the config says so, and a rebuild from that
   config under the float32 global policy computes in bfloat16 again;
5. one ``fit`` step on random targets changes the trainable weights.

The parameter formulas count what a paper's architecture table implies (a k x k conv from
``cin`` to ``cout`` channels has k*k*cin*cout weights (+cout biases); batch norm has two
trainable vectors); they do not look at the objects under test.
"""

import keras
import numpy as np

# --- independent parameter counts --------------------------------------------------------


def conv_params(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def bn_params(c):
    return 2 * c  # gamma, beta (moving statistics are not trainable)


def conv_bn_relu_params(cin, filters, k, separable=False):
    if separable and k > 1:  # depthwise k x k + BN, pointwise 1x1 + BN, no biases
        return k * k * cin + bn_params(cin) + cin * filters + bn_params(filters)
    return conv_params(k, cin, filters, bias=False) + bn_params(filters)


def aspp_params(cin, filters, num_rates, separable=False, image_pooling=True):
    branches = 1 + num_rates + int(image_pooling)
    return (conv_bn_relu_params(cin, filters, 1)
            + num_rates * conv_bn_relu_params(cin, filters, 3, separable)
            + (conv_bn_relu_params(cin, filters, 1) if image_pooling else 0)
            + conv_bn_relu_params(branches * filters, filters, 1))


def aspp_v2_params(cin, num_classes, num_rates, head, fc_filters=1024):
    if head == "conv":
        return num_rates * conv_params(3, cin, num_classes)
    return num_rates * (conv_params(3, cin, fc_filters) + conv_params(1, fc_filters, fc_filters)
                        + conv_params(1, fc_filters, num_classes))


def decoder_params(c_high, c_low, filters, low_level_filters, num_convs, separable=False):
    total = conv_bn_relu_params(c_low, low_level_filters, 1)
    channels = c_high + low_level_filters
    for _ in range(num_convs):
        total += conv_bn_relu_params(channels, filters, 3, separable)
        channels = filters
    return total


def resnet_params(stage_blocks, block_type, base_filters):
    """ResNet v1 (He et al. 2016, keras.applications layout: biased convs in bottleneck nets)."""
    bottleneck = block_type == "bottleneck"
    total = conv_params(7, 3, base_filters, bias=bottleneck) + bn_params(base_filters)
    cin = base_filters
    for stage, blocks in enumerate(stage_blocks):
        f = base_filters * 2**stage
        cout = 4 * f if bottleneck else f
        for unit in range(blocks):
            c = cin if unit == 0 else cout
            if unit == 0 and (stage > 0 or c != cout or bottleneck):
                total += conv_params(1, c, cout, bias=bottleneck) + bn_params(cout)
            if bottleneck:
                total += (conv_params(1, c, f) + bn_params(f) + conv_params(3, f, f) + bn_params(f)
                          + conv_params(1, f, cout) + bn_params(cout))
            else:
                total += (conv_params(3, c, f, bias=False) + bn_params(f)
                          + conv_params(3, f, f, bias=False) + bn_params(f))
        cin = cout
    return total


def resnet_channels(block_type, base_filters):
    """Channels of C2..C5."""
    mult = 4 if block_type == "bottleneck" else 1
    return {f"C{i + 2}": mult * base_filters * 2**i for i in range(4)}


#: xception_65 of tensorflow/models research/deeplab/core/xception.py (re-read from there):
#: (depth_list, skip_connection_type, num_units, stride) per block, after the root
#: entry_flow/conv1_1 (3x3/32, stride 2) and conv1_2 (3x3/64).
XCEPTION65_BLOCKS = (
    ((128, 128, 128), "conv", 1, 2),     # entry_flow/block1
    ((256, 256, 256), "conv", 1, 2),     # entry_flow/block2
    ((728, 728, 728), "conv", 1, 2),     # entry_flow/block3
    ((728, 728, 728), "sum", 16, 1),     # middle_flow/block1
    ((728, 1024, 1024), "conv", 1, 2),   # exit_flow/block1
    ((1536, 1536, 2048), "none", 1, 1),  # exit_flow/block2
)


def xception65_params():
    """Aligned Xception-65 (DeepLabv3+): bias-free convs, each followed by batch norm; a
    separable conv is a 3x3 depthwise + BN and a 1x1 pointwise + BN; 'conv' skips a 1x1 +
    BN."""
    total = conv_bn_relu_params(3, 32, 3) + conv_bn_relu_params(32, 64, 3)
    cin = 64
    for depths, skip, units, _ in XCEPTION65_BLOCKS:
        for _ in range(units):
            c = cin
            for depth in depths:
                total += conv_bn_relu_params(c, depth, 3, separable=True)
                c = depth
            if skip == "conv":
                total += conv_bn_relu_params(cin, depths[-1], 1)
            cin = depths[-1]
    return total


def unet_params(num_classes, filters):
    total, cin = 0, 3
    for f in filters:
        total += conv_bn_relu_params(cin, f, 3) + conv_bn_relu_params(f, f, 3)
        cin = f
    x = filters[-1]
    for level in range(len(filters) - 2, -1, -1):
        f = filters[level]
        total += conv_bn_relu_params(x, f, 1) + conv_bn_relu_params(2 * f, f, 3)
        total += conv_bn_relu_params(f, f, 3)
        x = f
    return total + conv_params(1, filters[0], num_classes)


def trainable_count(obj):
    return int(sum(np.prod(w.shape) for w in obj.trainable_weights))


# --- the checks ----------------------------------------------------------------------------


def _as_model(obj, inputs):
    """A functional model around a layer (models are returned as they are)."""
    if isinstance(obj, keras.Model):
        return obj
    if isinstance(inputs, (list, tuple)):
        tensors = [keras.Input(shape=(None, None, x.shape[-1])) for x in inputs]
        return keras.Model(tensors, obj(tensors))
    tensor = keras.Input(shape=(None, None, inputs.shape[-1]))
    return keras.Model(tensor, obj(tensor))


def _flat(outputs):
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def _leaf_layers(obj):
    return [layer for layer in obj._flatten_layers(include_self=True, recursive=True)
            if not list(layer._flatten_layers(include_self=False, recursive=False))]


def check_config_round_trip(obj):
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config, (config, clone.get_config())
    return clone


def check_keras_reload(model, inputs, path):
    expected = model.predict(inputs, verbose=0)
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    for got, want in zip(_flat(loaded.predict(inputs, verbose=0)), _flat(expected)):
        np.testing.assert_array_equal(got, want)
    return loaded


def check_dtype_policy(make):
    """Built under mixed_bfloat16: the config keeps the policy and a rebuild uses it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        obj = make()
    finally:
        keras.config.set_dtype_policy(previous)
    config = obj.get_config()
    assert keras.dtype_policies.get(config["dtype"]).name == "mixed_bfloat16", config["dtype"]
    clone = type(obj).from_config(config)  # under the float32 global policy
    assert clone.dtype_policy.name == "mixed_bfloat16"
    computing = {layer.compute_dtype for layer in _leaf_layers(clone)
                 if layer.weights and not isinstance(layer, keras.layers.InputLayer)}
    assert computing in (set(), {"bfloat16"}), computing


def check_fit_step(model, inputs):
    """One SGD step on random targets (mean squared error on every output) moves weights."""
    outputs = model.predict(inputs, verbose=0)
    rng = np.random.default_rng(0)
    if isinstance(outputs, dict):
        targets = {k: rng.normal(size=np.shape(v)).astype("float32") for k, v in outputs.items()}
        loss = {k: "mse" for k in outputs}
    else:
        targets = rng.normal(size=np.shape(outputs)).astype("float32")
        loss = "mse"
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    x = inputs if not isinstance(inputs, list) else list(inputs)
    model.fit(x, targets, epochs=1, batch_size=len(_flat(inputs)[0]), verbose=0, shuffle=False)
    after = [np.array(w) for w in model.trainable_weights]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    assert changed == len(before), f"only {changed} of {len(before)} trainable weights moved"


def check_public_class(make, inputs, expected_trainable, tmp_path):
    """All five checks on ``make()`` (a zero-argument factory) with ``inputs``."""
    obj = make()
    check_config_round_trip(obj)
    model = _as_model(obj, inputs)
    name = keras.saving.get_registered_name(type(obj))
    assert name.startswith("keras_deeplab>"), name
    check_keras_reload(model, inputs, str(tmp_path / f"{type(obj).__name__}.keras"))
    assert trainable_count(obj) == expected_trainable, (trainable_count(obj), expected_trainable)
    check_dtype_policy(make)
    if expected_trainable:
        check_fit_step(model, inputs)
    else:
        assert not obj.trainable_weights
