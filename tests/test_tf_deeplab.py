"""The TensorFlow DeepLab model-zoo architectures (`kd.models.TFDeepLab`) and their pieces.

References, each independent of the code under test:
- align-corners bilinear resizing: a NumPy loop of TF1 ``resize_bilinear(align_corners=True)``'s
  definition (output pixel i samples input position i * (in - 1) / (out - 1));
- the head: NumPy re-computations of ``research/deeplab/model.py``'s image pooling and of the
  MobileNetV2 "ASPP without atrous branches";
- parameter counts: the original's layer table (model.py, core/xception.py,
  slim/nets/mobilenet/mobilenet_v2.py) written out in this file;
- TFLite: the LiteRT interpreter (`kd.export.tflite` parity gate);
- JAX / PyTorch: the same ``.keras`` file under the other backend (tests/_backend_worker.py).
"""

import copy
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_deeplab as kd

WORKER = os.path.join(os.path.dirname(__file__), "_backend_worker.py")


# --- align-corners bilinear resizing ---------------------------------------------------------


def np_resize_align_corners(x, out_h, out_w):
    """TF1 ``resize_bilinear(align_corners=True)`` on NHWC, written out pixel by pixel."""
    b, in_h, in_w, c = x.shape
    out = np.zeros((b, out_h, out_w, c), np.float64)
    sy = (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
    sx = (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
    for i in range(out_h):
        y = i * sy
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, in_h - 1)
        dy = y - y0
        for j in range(out_w):
            xx = j * sx
            x0 = int(np.floor(xx))
            x1 = min(x0 + 1, in_w - 1)
            dx = xx - x0
            top = x[:, y0, x0] * (1 - dx) + x[:, y0, x1] * dx
            bottom = x[:, y1, x0] * (1 - dx) + x[:, y1, x1] * dx
            out[:, i, j] = top * (1 - dy) + bottom * dy
    return out.astype(np.float32)


RESIZE_CASES = [((5, 7), (17, 23)), ((17, 23), (5, 7)), ((1, 1), (9, 4)), ((1, 6), (4, 11)),
                ((6, 9), (1, 1)), ((9, 9), (9, 9)), ((33, 33), (129, 129))]


@pytest.mark.parametrize("src,dst", RESIZE_CASES)
def test_resize_align_corners_equals_numpy_reference(src, dst, rng):
    x = rng.normal(size=(2, *src, 3)).astype("float32")
    ref = np.zeros((1, *dst, 1), "float32")
    got = keras.ops.convert_to_numpy(kd.layers.ResizeLike(align_corners=True)([x, ref]))
    np.testing.assert_allclose(got, np_resize_align_corners(x, *dst), atol=1e-5)
    # The corners coincide exactly (what align_corners means).
    np.testing.assert_allclose(got[:, [0, -1]][:, :, [0, -1]],
                               x[:, [0, -1] if dst[0] > 1 else [0, 0]][:, :, [0, -1] if dst[1] > 1 else [0, 0]],
                               atol=1e-6)


def test_resize_align_corners_with_unknown_shapes_under_tracing(rng):
    import tensorflow as tf

    layer = kd.layers.ResizeLike(align_corners=True)
    fn = tf.function(lambda a, b: layer([a, b])).get_concrete_function(
        tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None, None, None, 1)))
    x = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    out = fn(tf.constant(x), tf.zeros((2, 17, 23, 1)))
    np.testing.assert_allclose(out, np_resize_align_corners(x, 17, 23), atol=1e-5)


def test_resize_like_align_corners_config_and_errors():
    layer = kd.layers.ResizeLike(align_corners=True, name="up")
    config = layer.get_config()
    assert config["align_corners"] is True
    assert kd.layers.ResizeLike.from_config(config).align_corners is True
    assert kd.layers.ResizeLike().get_config()["align_corners"] is False
    with pytest.raises(ValueError, match="align_corners=True is only defined for bilinear"):
        kd.layers.ResizeLike("nearest", align_corners=True)
    with pytest.raises(ValueError, match="align_corners=True is only defined for bilinear"):
        kd.layers.resize_to(np.zeros((1, 2, 2, 1), "float32"), 3, 3, "bicubic", align_corners=True)


def _resize_models():
    """Single-input models (what tests/_backend_worker.py runs): crop a corner of the input as
    the small map, resize up to the input, down to the crop, and from one row/column."""
    x = keras.Input(shape=(17, 23, 3))
    small = keras.layers.Cropping2D(((0, 12), (0, 16)))(x)   # 5 x 7
    row = keras.layers.Cropping2D(((0, 16), (0, 17)))(x)     # 1 x 6
    pixel = keras.layers.Cropping2D(((0, 16), (0, 22)))(x)   # 1 x 1
    up = kd.layers.ResizeLike(align_corners=True)
    return {
        "up": (keras.Model(x, up([small, x])), lambda a: np_resize_align_corners(a[:, :5, :7], 17, 23)),
        "down": (keras.Model(x, up([x, small])), lambda a: np_resize_align_corners(a, 5, 7)),
        "row": (keras.Model(x, up([row, x])), lambda a: np_resize_align_corners(a[:, :1, :6], 17, 23)),
        "pixel": (keras.Model(x, up([pixel, x])), lambda a: np_resize_align_corners(a[:, :1, :1], 17, 23)),
        "to_pixel": (keras.Model(x, up([x, pixel])), lambda a: np_resize_align_corners(a, 1, 1)),
    }


def _run_worker(backend, x_path, model_paths):
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"{backend} is not installed: run `make install-backends` (pip install -e '.[backends]').")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, WORKER, str(x_path), *map(str, model_paths)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-3000:]}"
    return {str(p): np.load(f"{p}.{backend}.npy") for p in model_paths}


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_resize_align_corners_on_other_backends_equals_numpy_reference(backend, tmp_path, rng):
    x = rng.normal(size=(2, 17, 23, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    paths, expected = [], {}
    for name, (model, reference) in _resize_models().items():
        paths.append(tmp_path / f"resize_{name}.keras")
        model.save(paths[-1])
        expected[str(paths[-1])] = reference(x)
    for path, got in _run_worker(backend, tmp_path / "x.npy", paths).items():
        np.testing.assert_allclose(got, expected[path], atol=1e-5, err_msg=f"{path} on {backend}")


# --- MobileNetV2's decoder end point -----------------------------------------------------------


@pytest.mark.parametrize("output_stride", [8, 16])
def test_mobilenetv2_c2_depthwise_is_keras_applications_block_2_depthwise_relu(output_stride, rng):
    """"C2_depthwise" = MobileNetV2's block 2 depthwise ReLU6 output (the original's
    ``layer_4/depthwise_output``): 144 channels, stride 4, at every output stride."""
    ref = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3))
    for layer in ref.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)])
    ours = kd.backbones.MobileNetV2Backbone(output_stride=output_stride)
    for layer in ref.layers:
        if layer.get_weights() and layer.name not in ("Conv_1", "Conv_1_bn"):
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    # Even sizes: keras.applications pads odd-sized strided convs differently ("valid" after
    # its correct_pad); at even sizes both are TF "SAME", like the original's slim convs.
    x = rng.uniform(0, 255, size=(1, 64, 48, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(ours(x)["C2_depthwise"])
    tap = keras.Model(ref.input, ref.get_layer("block_2_depthwise_relu").output)
    want = keras.ops.convert_to_numpy(tap(keras.applications.mobilenet_v2.preprocess_input(x.copy())))
    assert got.shape == (1, 16, 12, 144)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


# --- the head against a NumPy re-computation of model.py -----------------------------------------


def _randomize(model, rng):
    """Non-trivial BN statistics and biases in the head, so a missed layer or branch shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))


def _head(model, rng, image_size, c5_size, low_size=None):
    """The model from its backbone's features on: a functional model on the tensors the head
    reads (the images for the final resize, C5, the decoder's low-level feature), run on
    random features (a random backbone's features are nearly flat in space, where resizes
    would go unseen). Returns (logits, features dict)."""
    def field(size, channels):
        # noise on top of random per-channel ramps: local detail and large-scale structure
        # (which survives the average pooling).
        i, j = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
        slopes = rng.normal(0, 2, size=(2, 2, 1, 1, channels))
        ramps = slopes[0] * i[None, :, :, None] + slopes[1] * j[None, :, :, None]
        return (rng.normal(size=(2, *size, channels)) + ramps).astype("float32")

    tensors = [model.input, model.get_layer("aspp0").input]
    features = {"C5": field(c5_size, tensors[1].shape[-1])}
    if low_size is not None:
        tensors.append(model.get_layer("decoder-feature_projection0").input)
        features["low"] = field(low_size, tensors[2].shape[-1])
    head = keras.Model(tensors, model.output)
    images = np.zeros((2, *image_size, 3), "float32")
    return head.predict([images, *features.values()], verbose=0), features


def _w(model, name):
    return [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]


def _np_bn(x, gamma, beta, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _np_conv_bn_relu(model, x, scope):
    """slim conv2d 1x1 (no bias) -> batch_norm (epsilon 1e-5) -> ReLU, as model.py's arg scope."""
    (kernel,) = _w(model, scope)
    return np.maximum(_np_bn(x @ kernel[0, 0], *_w(model, f"{scope}-BatchNorm")), 0)


def _np_depthwise_same(x, kernel, rate):
    """3x3 depthwise conv, stride 1, atrous ``rate``, "SAME" zero padding (rate on each side)."""
    b, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (rate, rate), (rate, rate), (0, 0)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += padded[:, i * rate:i * rate + h, j * rate:j * rate + w] * kernel[i, j, :, 0]
    return out


def _np_split_separable(model, x, scope, rate=1):
    """model.py's split_separable_conv2d: depthwise -> BN -> ReLU -> 1x1 -> BN -> ReLU."""
    (depthwise,) = _w(model, f"{scope}_depthwise")
    x = np.maximum(_np_bn(_np_depthwise_same(x, depthwise, rate), *_w(model, f"{scope}_depthwise-BatchNorm")), 0)
    return _np_conv_bn_relu(model, x, f"{scope}_pointwise")


def _np_avg_pool_valid(x, window):
    """slim avg_pool2d(window, stride 1, 'VALID')."""
    b, h, w, c = x.shape
    oh, ow = h - window[0] + 1, w - window[1] + 1
    out = np.zeros((b, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i:i + window[0], j:j + window[1]].mean(axis=(1, 2))
    return out


def np_tf_deeplab(model, features, image_size, rates, crop_window=None, low_level=None):
    """model.py at inference from the backbone's features: ASPP (branch order image_pooling,
    aspp0, aspp1..), concat_projection (dropout is the identity), the decoder when
    ``low_level`` is given, logits/semantic, align-corners resize to ``image_size``."""
    x = np.asarray(features["C5"], np.float64)
    h, w = x.shape[1:3]
    if crop_window is None:
        pooled = x.mean(axis=(1, 2), keepdims=True)
    else:
        pooled = _np_avg_pool_valid(x, crop_window)
    pooled = _np_conv_bn_relu(model, pooled, "image_pooling")
    branches = [np_resize_align_corners(pooled, h, w), _np_conv_bn_relu(model, x, "aspp0")]
    branches += [_np_split_separable(model, x, f"aspp{i}", r) for i, r in enumerate(rates, 1)]
    y = _np_conv_bn_relu(model, np.concatenate(branches, -1), "concat_projection")
    if low_level is not None:
        low = _np_conv_bn_relu(model, np.asarray(features[low_level], np.float64),
                               "decoder-feature_projection0")
        y = np_resize_align_corners(y, *low.shape[1:3])
        y = _np_split_separable(model, np.concatenate([y, low], -1), "decoder-decoder_conv0")
        y = _np_split_separable(model, y, "decoder-decoder_conv1")
    kernel, bias = _w(model, "logits-semantic")
    return np_resize_align_corners(y @ kernel[0, 0] + bias, *image_size)


def _tiny_mobilenet(**kwargs):
    return kd.models.TFDeepLab(num_classes=5, backbone="mobilenetv2", backbone_kwargs={"alpha": 0.35},
                               aspp_filters=16, decoder_filters=16, low_level_filters=8, **kwargs)


def test_mobilenetv2_head_has_image_pooling_and_1x1_only_and_equals_numpy(rng):
    """The model zoo's MobileNetV2 DeepLabv3: ASPP = image pooling + aspp0 (no atrous
    branch), so concat_projection takes 2 x 16 channels; logits equal the NumPy model.py."""
    model = _tiny_mobilenet(aspp_rates=(), decoder_output_stride=None)
    _randomize(model, rng)
    assert model.get_layer("concat_projection").kernel.shape == (1, 1, 2 * 16, 16)
    names = {layer.name for layer in model.layers}
    assert not names & {"aspp1_depthwise", "decoder-feature_projection0"}
    got, features = _head(model, rng, (49, 67), (4, 5))
    np.testing.assert_allclose(got, np_tf_deeplab(model, features, (49, 67), ()), atol=1e-4, rtol=1e-4)


def test_deeplabv3plus_head_with_crop_size_image_pooling_equals_numpy(rng):
    """Separable atrous ASPP branches, the original's crop-size image pooling (window
    scale_dimension(crop, 1/16), stride 1, VALID, align-corners resize back) and the decoder
    (ASPP output resized with align corners to the low-level feature)."""
    model = _tiny_mobilenet(aspp_rates=(1, 2), image_pooling_crop_size=(33, 49))
    _randomize(model, rng)
    # The decoder reads C2_depthwise by default on MobileNetV2: block 2's expansion, 6 x 8
    # channels at alpha 0.35 (6 x 24 = 144 at alpha 1).
    assert model.get_layer("decoder-feature_projection0").kernel.shape[2] == 6 * 8
    got, features = _head(model, rng, (61, 83), (4, 6), (16, 21))
    # scale_dimension(33, 1/16) = int(32/16 + 1) = 3, scale_dimension(49, 1/16) = int(48/16 + 1) = 4
    want = np_tf_deeplab(model, features, (61, 83), (1, 2), crop_window=(3, 4), low_level="low")
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


# --- the model-zoo architectures ---------------------------------------------------------------

from _model_checks import (  # noqa: E402
    aspp_params,
    bn_params,
    check_config_round_trip,
    check_fit_step,
    check_keras_reload,
    conv_bn_relu_params,
    conv_params,
    decoder_params,
    trainable_count,
    xception65_params,
)

from keras_deeplab.pretrained.registry import get_architecture  # noqa: E402

ARCHS = ("deeplabv3plus_xception65", "deeplabv3_mobilenetv2", "deeplabv3plus_mobilenetv2")


def mobilenet_v2_params():
    """slim ``V2_DEF`` up to layer_18 (DeepLab's MobileNetV2, depth 1.0): ``Conv`` 3x3/32,
    ``expanded_conv`` (expansion 1: depthwise + project to 16), then (out, repeats) =
    (24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1) with expansion 6; every conv
    bias-free and batch-normed; no ``Conv_1``."""
    total = conv_bn_relu_params(3, 32, 3)
    total += 9 * 32 + bn_params(32) + conv_bn_relu_params(32, 16, 1)
    cin = 16
    for cout, repeats in ((24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1)):
        for _ in range(repeats):
            inner = 6 * cin
            total += conv_bn_relu_params(cin, inner, 1) + 9 * inner + bn_params(inner)
            total += conv_bn_relu_params(inner, cout, 1)
            cin = cout
    return total


#: Trainable parameters from the original's layer table (model.py head: ASPP depth 256,
#: image pooling, separable atrous branches, concat_projection; decoder 48 + two separable
#: 256 convs; logits/semantic with bias), for 21 classes.
EXPECTED_PARAMS = {
    "deeplabv3plus_xception65": lambda: (
        xception65_params() + aspp_params(2048, 256, 3, separable=True)
        + decoder_params(256, 256, 256, 48, 2, separable=True) + conv_params(1, 256, 21)),
    "deeplabv3_mobilenetv2": lambda: (
        mobilenet_v2_params() + aspp_params(320, 256, 0) + conv_params(1, 256, 21)),
    "deeplabv3plus_mobilenetv2": lambda: (
        mobilenet_v2_params() + aspp_params(320, 256, 0)
        + decoder_params(256, 144, 256, 48, 2, separable=True) + conv_params(1, 256, 21)),
}


@pytest.fixture(scope="module")
def archs():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = get_architecture(name).build(21, False)
        return cache[name]

    return get


def _calibrate_bn(model, images):
    """Sets every batch norm's moving statistics to its batch statistics on ``images`` (one
    training-mode pass with momentum 0): a random network whose activations neither vanish
    nor explode, so the logits vary over the image as a trained model's do."""
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return model


def _photos(rng, n, height, width):
    """Smooth random images (blobs of colour), more like photos than per-pixel noise."""
    coarse = rng.uniform(0, 255, size=(n, 5, 6, 3)).astype("float32")
    images = np.asarray(keras.ops.image.resize(coarse, (height, width)))
    return np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype("float32")


def test_mobilenetv2_known_published_backbone_size():
    # Cross-check of the table above: keras.applications' MobileNetV2 (include_top=False)
    # minus its Conv_1 (320 -> 1280) and Conv_1_bn is the same network.
    ref = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    conv_1 = trainable_count(ref.get_layer("Conv_1")) + trainable_count(ref.get_layer("Conv_1_bn"))
    assert trainable_count(ref) - conv_1 == mobilenet_v2_params()


@pytest.mark.parametrize("name", ARCHS)
def test_architecture_parameter_counts_equal_the_original_layer_table(name, archs):
    model = archs(name)
    assert trainable_count(model) == EXPECTED_PARAMS[name]()
    assert model.output_stride == 16 and model.backbone.output_stride == 16
    assert model.name == name


def _conv_multiply_adds(model, height, width):
    """Multiply-adds of every conv of ``model`` rebuilt for a fixed (height, width) input, from
    the layers' static output shapes (k_h * k_w * C_in * C_out per output pixel; depthwise
    k_h * k_w * C)."""
    config = copy.deepcopy(model.get_config())
    config["input_shape"] = config["backbone"]["config"]["input_shape"] = (height, width, 3)
    fixed = type(model).from_config(config)
    total = 0
    for layer in fixed._flatten_layers():
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            total += h * w * layer.kernel_size[0] * layer.kernel_size[1] * c
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            total += h * w * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1] * c
    return total


#: The model zoo's published Multiply-Adds (g3doc/model_zoo.md, tfprof) at OS16, one scale:
#: PASCAL VOC (513x513) and Cityscapes (1025x2049).
PUBLISHED_MULTIPLY_ADDS = {
    ("deeplabv3plus_xception65", 513, 513): 54.17e9,
    ("deeplabv3_mobilenetv2", 513, 513): 2.75e9,
    ("deeplabv3plus_xception65", 1025, 2049): 418.64e9,
    ("deeplabv3_mobilenetv2", 1025, 2049): 21.27e9,
}


@pytest.mark.parametrize("name,height,width", sorted(PUBLISHED_MULTIPLY_ADDS))
def test_conv_multiply_adds_match_the_model_zoo(name, height, width, archs):
    """Strides, resolutions (decoder at OS4, ASPP at OS16) and channels as the original's: our
    conv multiply-adds are within 1 % of the published figures (ours count convs only:
    0.1-0.4 % below)."""
    ours = _conv_multiply_adds(archs(name), height, width)
    published = PUBLISHED_MULTIPLY_ADDS[(name, height, width)]
    assert 0.99 * published <= ours <= published


def test_architecture_configs_round_trip(archs):
    for name in ARCHS:
        clone = check_config_round_trip(archs(name))
        assert [w.shape for w in clone.weights] == [w.shape for w in archs(name).weights]
        assert isinstance(archs(name).get_config()["backbone"], dict)  # a serialized instance


def test_mobilenetv2_plus_reloads_and_trains(tmp_path, rng):
    model = get_architecture("deeplabv3plus_mobilenetv2").build(4, False)
    x = rng.uniform(0, 255, size=(2, 49, 67, 3)).astype("float32")
    _calibrate_bn(model, _photos(rng, 4, 49, 67))
    check_keras_reload(model, x, str(tmp_path / "m.keras"))
    check_fit_step(model, x)


def test_with_output_stride_8_keeps_weights_and_doubles_rates(archs, rng):
    model = archs("deeplabv3plus_xception65")
    assert [model.get_layer(f"aspp{i}_depthwise").dilation_rate for i in (1, 2, 3)] == [
        (6, 6), (12, 12), (18, 18)]
    os8 = kd.models.with_output_stride(model, 8)
    assert os8.output_stride == 8 and os8.backbone.output_stride == 8
    assert os8.backbone.name == "xception_65" and type(os8) is kd.models.TFDeepLab
    assert [os8.get_layer(f"aspp{i}_depthwise").dilation_rate for i in (1, 2, 3)] == [
        (12, 12), (24, 24), (36, 36)]
    assert [w.path for w in os8.weights] == [w.path for w in model.weights]
    for a, b in zip(os8.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = rng.uniform(0, 255, size=(1, 33, 41, 3)).astype("float32")
    assert os8.predict(x, verbose=0).shape == (1, 33, 41, 21)
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\)"):
        kd.models.with_output_stride(model, 4)


def test_predictor_runs_the_mobilenetv2_model_at_output_stride_8(rng):
    model = get_architecture("deeplabv3_mobilenetv2").build(21, False)
    images = _photos(rng, 4, 37, 45)
    image = images[0]
    _calibrate_bn(model, images)
    predictor = kd.inference.Predictor(model, output_stride=8)
    log_probs = predictor.logits(image)  # the Predictor returns log-probabilities
    assert log_probs.shape == (37, 45, 21)
    rebuilt = kd.models.with_output_stride(model, 8)
    assert rebuilt.backbone.get_layer("block_16_depthwise").dilation_rate == (4, 4)
    assert rebuilt.get_config()["aspp_rates"] == ()
    logits = rebuilt.predict(image[None], verbose=0)[0].astype(np.float64)
    want = logits - logits.max(-1, keepdims=True)
    want -= np.log(np.exp(want).sum(-1, keepdims=True))
    assert np.ptp(want.argmax(-1)) > 0  # not a constant map
    np.testing.assert_allclose(log_probs, want, atol=1e-4)


def test_decoder_output_stride_and_low_level_feature_errors():
    with pytest.raises(ValueError, match=r"decoder_output_stride=8.*\(None, 4\)"):
        kd.models.TFDeepLab(3, backbone="resnet18", backbone_kwargs={"base_filters": 8},
                            decoder_output_stride=8)
    with pytest.raises(ValueError, match="low_level_feature='C2_depthwise' is not a feature"):
        kd.models.TFDeepLab(3, backbone="resnet18", backbone_kwargs={"base_filters": 8},
                            low_level_feature="C2_depthwise")
    with pytest.raises(ValueError, match="image_pooling_crop_size"):
        kd.models.TFDeepLab(3, backbone="resnet18", backbone_kwargs={"base_filters": 8},
                            image_pooling_crop_size=(0, 513))


# --- TFLite -----------------------------------------------------------------------------------


def _resize_options(path):
    """(align_corners, half_pixel_centers) of every RESIZE_BILINEAR op, from the flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in model.operatorCodes]
    return [(bool(op.builtinOptions.alignCorners), bool(op.builtinOptions.halfPixelCenters))
            for sub in model.subgraphs for op in sub.operators
            if codes[op.opcodeIndex] == schema.BuiltinOperator.RESIZE_BILINEAR]


@pytest.mark.large  # ~25 s each on two cores (conversion of a 2.3M-parameter model)
@pytest.mark.parametrize("name", ["deeplabv3_mobilenetv2", "deeplabv3plus_mobilenetv2"])
def test_tflite_float32_export_passes_the_parity_gate(name, tmp_path, rng):
    """float32 at a dynamic size: logits within 1e-4 (relative to their largest magnitude) of
    Keras in the LiteRT interpreter, native dilated depthwise convs, align-corners
    RESIZE_BILINEAR ops only."""
    model = get_architecture(name).build(6, False)
    _calibrate_bn(model, _photos(rng, 6, 65, 65))
    sample = _photos(rng, 2, 57, 73)
    info = kd.export.tflite(model, str(tmp_path / "fp32.tflite"), sample_data=sample,
                            num_parity_images=2, min_argmax_agreement=0.999, verbose=False)
    assert info["dynamic_input_size"]
    parity = info["parity"]
    assert parity["max_abs_diff_logits"] <= 1e-4 * max(1.0, parity["max_abs_logit_keras"])
    assert parity["max_abs_diff_probabilities"] <= 1e-4
    assert any(d["op"] == "DEPTHWISE_CONV_2D" and d["dilation"] == [2, 2]
               for d in info["ops"]["dilated_convolutions"])
    ops = set(info["ops"]["op_counts"])
    assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    resizes = _resize_options(tmp_path / "fp32.tflite")
    # image pooling broadcast + final resize (+ decoder resize): all corner-aligned.
    assert resizes and set(resizes) == {(True, False)}
    assert len(resizes) == (3 if "plus" in name else 2)


@pytest.mark.large  # ~45 s on two cores (10 epochs on 48 64x64 images, int8 conversion)
def test_tflite_int8_of_a_trained_model_passes_the_parity_gate(tmp_path):
    """int8 through the parity gate (argmax agreement >= 0.98, mIoU within 0.01) for
    deeplabv3plus_mobilenetv2 (the decoder model: every op of the mobile archs) trained for a
    few epochs on an easy task (coloured rectangles): a random network's near-tie logits make
    agreement meaningless (0.5-0.98 measured). deeplabv3_mobilenetv2 (OS16 logits, 4x4 at
    64 px) learns too little in 10 epochs to be a fair case."""
    from test_export import _easy_data

    model = get_architecture("deeplabv3plus_mobilenetv2").build(4, False)
    images, masks = _easy_data(48)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, masks[..., None], batch_size=8, epochs=10, verbose=0)
    # Ten epochs leave the moving statistics (momentum 0.999 / 0.9997) far from the batch
    # statistics the weights were trained with: set them as a converged run would have them.
    _calibrate_bn(model, images[:24])
    test_images, test_masks = _easy_data(16, seed=1)
    assert (model.predict(test_images, verbose=0).argmax(-1) == test_masks).mean() > 0.9
    info = kd.export.tflite(model, str(tmp_path / "int8.tflite"), quantization="int8",
                            representative_data=images[:8], input_size=(64, 64),
                            sample_data=(test_images[:8], test_masks[:8]), num_parity_images=8,
                            min_argmax_agreement=0.98, verbose=False)
    assert info["quantization"] == "int8" and info["parity"]["argmax_agreement"] >= 0.98
    assert abs(info["parity"]["miou_delta"]) < 0.01
    assert not set(info["ops"]["op_counts"]) & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}


# --- JAX / PyTorch ------------------------------------------------------------------------------


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_logits_agree_across_backends(backend, tmp_path, rng):
    """deeplabv3plus_mobilenetv2 (dilated depthwise backbone, image pooling, decoder on
    C2_depthwise) and a TFDeepLab with separable atrous ASPP branches and crop-size image
    pooling give the TensorFlow logits (<= 1e-4) under JAX and PyTorch."""
    x = _photos(rng, 2, 57, 73)
    np.save(tmp_path / "x.npy", x)
    models = {
        "plus_mnv2": get_architecture("deeplabv3plus_mobilenetv2").build(5, False),
        "atrous_crop": kd.models.TFDeepLab(
            num_classes=4, backbone="mobilenetv2", backbone_kwargs={"alpha": 0.35},
            aspp_rates=(2, 3), image_pooling_crop_size=(33, 49), aspp_filters=16,
            decoder_filters=16, low_level_filters=8),
    }
    paths, expected = [], {}
    for name, model in models.items():
        _calibrate_bn(model, _photos(rng, 4, 57, 73))
        paths.append(tmp_path / f"{name}.keras")
        model.save(paths[-1])
        expected[str(paths[-1])] = model.predict(x, verbose=0)
    for path, got in _run_worker(backend, tmp_path / "x.npy", paths).items():
        want = expected[path]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()), rtol=1e-4,
                                   err_msg=f"{path} on {backend}")


@pytest.mark.large  # Xception-65 (41M parameters): about a minute on two cores
def test_xception65_tflite_float32_has_native_dilated_separable_aspp(archs, tmp_path, rng):
    """The ASPP's atrous depthwise convs (rates 6/12/18 at OS16) are single native dilated
    DEPTHWISE_CONV_2D ops, and the float32 export passes the parity gate (LiteRT vs Keras)."""
    model = get_architecture("deeplabv3plus_xception65").build(21, False)
    _calibrate_bn(model, _photos(rng, 4, 65, 65))
    info = kd.export.tflite(model, str(tmp_path / "x65.tflite"), sample_data=_photos(rng, 1, 65, 81),
                            num_parity_images=1, min_argmax_agreement=0.999, verbose=False)
    parity = info["parity"]
    # Relative to the logits' scale (tens here: float32 rounding through 65 layers).
    assert parity["max_abs_diff_logits"] <= 1e-4 * max(1.0, parity["max_abs_logit_keras"])
    dilated = {(d["op"], d["dilation"][0]) for d in info["ops"]["dilated_convolutions"]}
    assert {("DEPTHWISE_CONV_2D", r) for r in (6, 12, 18)} <= dilated
    # exit_flow/block2 runs at rate 2 at OS16 (its stride became dilation)
    assert ("DEPTHWISE_CONV_2D", 2) in dilated
    assert set(_resize_options(tmp_path / "x65.tflite")) == {(True, False)}
