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
