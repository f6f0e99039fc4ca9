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
