"""SavedModel and TFLite export: round trips against the Keras model, op checks, sidecars."""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_deeplab as kd
from keras_deeplab.export import TFLiteExportError
from keras_deeplab.export.ops import quantization_warnings
from keras_deeplab.export.tflite import native_dilated_depthwise


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def _run_tflite(path, image):
    """Independent TFLite run: the LiteRT interpreter, resized to the image."""
    it = _interpreter(path)
    inp = it.get_input_details()[0]
    if list(inp["shape_signature"][1:3]) == [-1, -1]:
        it.resize_tensor_input(inp["index"], [1, *image.shape])
    it.allocate_tensors()
    x = image[None]
    if inp["dtype"] == np.uint8:
        scale, zp = inp["quantization"]
        x = np.clip(np.round(x / scale + zp), 0, 255).astype(np.uint8)
    else:
        x = x.astype(np.float32)
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])[0]


def _op_list(path):
    """The interpreter's own op list (execution order)."""
    return [d["op_name"] for d in _interpreter(path)._get_ops_details()]


def _op_names(path):
    return set(_op_list(path))


def _traced_ops(fn, channels):
    """Op types of a TF trace, and the dilations of its DepthwiseConv2dNative ops."""
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec((1, None, None, channels))).graph
    ops = graph.get_operations()
    dilations = [list(op.get_attr("dilations")) for op in ops if op.type == "DepthwiseConv2dNative"]
    return {op.type for op in ops}, dilations


def _tiny_model(num_classes=5, backbone="resnet18", preprocessing=True, **kw):
    kwargs = dict(output_stride=16, aspp_filters=16, decoder_filters=16)
    if backbone == "resnet18":
        kwargs["backbone_kwargs"] = {"base_filters": 8, "include_preprocessing": preprocessing}
    kwargs.update(kw)
    return kd.models.DeepLabV3Plus(num_classes=num_classes, backbone=backbone, **kwargs)


def _images(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, h, w, 3)).round().astype(np.float32)


class _DilatedDepthwise(keras.layers.Layer):
    """Plain tf.nn.depthwise_conv2d with dilation: lowers to SPACE_TO_BATCH_ND."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 1))

    def call(self, x):
        return tf.nn.depthwise_conv2d(x, self.kernel, [1, 1, 1, 1], "SAME", dilations=(2, 2))


class _DilatedConv(keras.layers.Layer):
    """tf.nn.conv2d with dilations: a native dilated CONV_2D."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 4))

    def call(self, x):
        return tf.nn.conv2d(x, self.kernel, 1, "SAME", dilations=3)


def _hand_model(layer):
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    return keras.Model(inp, layer(x))


def test_dilated_conv_is_native_and_space_to_batch_is_rejected(tmp_path):
    ok = tmp_path / "ok.tflite"
    info = kd.export.tflite(_hand_model(_DilatedConv()), ok, verbose=False)
    assert {"op": "CONV_2D", "dilation": [3, 3]} in info["ops"]["dilated_convolutions"]
    assert "SPACE_TO_BATCH_ND" not in _op_names(ok)

    bad = tmp_path / "bad.tflite"
    with pytest.raises(TFLiteExportError, match="SPACE_TO_BATCH_ND"):
        kd.export.tflite(_hand_model(_DilatedDepthwise()), bad, verbose=False)
    assert not bad.exists() and not os.path.exists(str(bad) + ".json")
    # Opting out writes the file, and the independent op list shows the problem.
    kd.export.tflite(_hand_model(_DilatedDepthwise()), bad, check=False, verbose=False)
    assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} <= _op_names(bad)


def test_check_ops_rejects_flex_and_custom_ops():
    with pytest.raises(TFLiteExportError, match="FlexConv2D"):
        kd.export.check_ops([{"op": "CONV_2D"}, {"op": "FlexConv2D"}])
    with pytest.raises(TFLiteExportError, match="CUSTOM"):
        kd.export.check_ops([{"op": "CUSTOM"}])
    kd.export.check_ops([{"op": "CONV_2D", "dilation": [2, 2]}])


def test_reverse_v2_warns_only_for_int8():
    ops = [{"op": "REVERSE_V2"}, {"op": "CONV_2D", "dilation": [1, 1]}]
    (message,) = quantization_warnings(ops, "int8")
    assert "REVERSE_V2" in message and "keras.ops.take" in message
    assert quantization_warnings(ops, None) == quantization_warnings(ops, "float16") == []
    assert quantization_warnings([{"op": "GATHER"}], "int8") == []


def test_dilated_depthwise_exports_as_one_native_op_without_global_state(tmp_path):
    layer = kd.layers.AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=True)
    model = _hand_model(layer)
    outside = kd.layers.AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same")
    outside.build((1, 8, 8, 4))
    assert layer.native_dilation is False and "native_dilation" not in layer.get_config()

    # The switch is an attribute of the model's own layers, set for the `with` block only:
    # a layer outside the model still traces Keras' space-to-batch form meanwhile.
    with native_dilated_depthwise(model) as switched:
        assert switched == [layer] and layer.native_dilation is True
        types, dilations = _traced_ops(layer, 4)
        assert dilations == [[1, 2, 2, 1]] and "SpaceToBatchND" not in types
        types, dilations = _traced_ops(outside, 4)
        assert dilations == [[1, 1, 1, 1]] and "SpaceToBatchND" in types
    assert layer.native_dilation is False
    with pytest.raises(KeyError), native_dilated_depthwise(model):
        raise KeyError("an error while tracing")
    assert layer.native_dilation is False  # restored on error too

    path = tmp_path / "dw.tflite"
    info = kd.export.tflite(model, path, verbose=False)  # dynamic input size
    ops = _op_list(path)
    assert ops.count("DEPTHWISE_CONV_2D") == 1
    assert not set(ops) & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    assert info["ops"]["dilated_convolutions"] == [{"op": "DEPTHWISE_CONV_2D", "dilation": [2, 2]}]
    image = _images(1, 23, 31, seed=7)[0]
    ref = keras.ops.convert_to_numpy(model(image[None]))[0]
    np.testing.assert_allclose(_run_tflite(path, image), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

    # After the export the layer runs its normal path again: space-to-batch in a TF trace,
    # and eager execution on the CPU (whose depthwise kernel rejects native dilations),
    # equal to keras.layers.DepthwiseConv2D with the same weights.
    assert layer.native_dilation is False
    types, dilations = _traced_ops(layer, 4)
    assert dilations == [[1, 1, 1, 1]] and {"SpaceToBatchND", "BatchToSpaceND"} <= types
    features = np.random.default_rng(8).normal(size=(1, 13, 17, 4)).astype("float32")
    plain = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=True)
    plain.build(features.shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(features), plain(features), atol=1e-5)


def test_tflite_float32_dynamic_size_matches_keras(tmp_path):
    model = _tiny_model()
    path = tmp_path / "fp32.tflite"
    info = kd.export.tflite(model, path, representative_data=_images(2, 65, 65), verbose=False)

    sidecar = json.loads((tmp_path / "fp32.tflite.json").read_text())
    assert sidecar == json.loads(json.dumps(info))  # the returned record is what was written
    assert sidecar["schema"] == "keras_deeplab.provenance/1" and sidecar["kind"] == "tflite"
    assert sidecar["model"] == {"class": "DeepLabV3Plus", "name": model.name, "num_classes": 5}
    assert sidecar["environment"]["tensorflow"] == tf.__version__
    assert sidecar["size_bytes"] == os.path.getsize(path)
    assert sidecar["quantization"] == "float32" and sidecar["dynamic_input_size"]
    ops = _op_names(path)
    assert set(sidecar["ops"]["op_counts"]) == ops  # flatbuffer parse == interpreter's list
    assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    assert not any(o.startswith("Flex") for o in ops)
    # ASPP rates 6/12/18 at output stride 16 are native dilated convolutions.
    rates = {tuple(d["dilation"]) for d in info["ops"]["dilated_convolutions"]}
    assert {(6, 6), (12, 12), (18, 18)} <= rates

    for image in (_images(1, 65, 65, seed=1)[0], _images(1, 37, 50, seed=2)[0]):
        ref = keras.ops.convert_to_numpy(model(image[None]))[0]
        got = _run_tflite(path, image)
        assert got.shape == ref.shape
        assert np.abs(_softmax(got) - _softmax(ref)).max() <= 1e-4
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert sidecar["parity"]["max_abs_diff_probabilities"] <= 1e-4
    assert sidecar["parity"]["argmax_agreement"] > 0.999


def test_tflite_dilated_depthwise_dynamic_size(tmp_path):
    # MobileNetV2 has dilated depthwise convs in its last blocks at output stride 16.
    model = kd.models.DeepLabV3Plus(
        num_classes=3, backbone="mobilenetv2", output_stride=16, aspp_filters=16, decoder_filters=16
    )
    path = tmp_path / "mbv2.tflite"
    info = kd.export.tflite(model, path, verbose=False)
    assert any(
        d["op"] == "DEPTHWISE_CONV_2D" and d["dilation"][0] > 1
        for d in info["ops"]["dilated_convolutions"]
    )
    image = _images(1, 41, 47, seed=3)[0]
    ref = keras.ops.convert_to_numpy(model(image[None]))[0]
    assert np.abs(_softmax(_run_tflite(path, image)) - _softmax(ref)).max() <= 1e-4


def test_tflite_float16_fixed_size(tmp_path):
    model = _tiny_model()
    fp32 = kd.export.tflite(model, tmp_path / "a.tflite", input_size=(65, 65), verbose=False)
    fp16 = kd.export.tflite(
        model, tmp_path / "b.tflite", quantization="float16", input_size=(65, 65), verbose=False
    )
    assert fp32["input"]["shape"] == [1, 65, 65, 3]
    assert fp16["size_bytes"] < 0.7 * fp32["size_bytes"]
    image = _images(1, 65, 65, seed=4)[0]
    ref = keras.ops.convert_to_numpy(model(image[None]))[0]
    got = _run_tflite(tmp_path / "b.tflite", image)
    # float16 weights: ~3 significant digits, relative to the logit scale.
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.99


def test_tflite_argument_errors(tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match="representative_data"):
        kd.export.tflite(model, tmp_path / "x.tflite", quantization="int8")
    with pytest.raises(ValueError, match="quantization"):
        kd.export.tflite(model, tmp_path / "x.tflite", quantization="int4")
    with pytest.raises(ValueError, match="input_size"):
        kd.export.tflite(model, tmp_path / "x.tflite", input_size=(0, 64))
    with pytest.raises(ValueError, match="min_argmax_agreement"):
        kd.export.tflite(model, tmp_path / "x.tflite", min_argmax_agreement=1.5)
    assert not list(tmp_path.iterdir())


# -- int8 on a trained tiny model ----------------------------------------------------------

COLOURS = np.array([(40, 40, 40), (220, 40, 40), (40, 200, 60), (50, 70, 230)], np.float32)


def _easy_data(n, size=64, seed=0):
    """Rectangles whose colour is their class, on a dark background, with noise."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.int32)
    for i in range(n):
        for _ in range(3):
            c = rng.integers(1, len(COLOURS))
            y0, x0 = rng.integers(0, size - 16, 2)
            h, w = rng.integers(12, 32, 2)
            masks[i, y0 : y0 + h, x0 : x0 + w] = c
    images = COLOURS[masks] + rng.normal(0, 12, (n, size, size, 3))
    return np.clip(images, 0, 255).round().astype(np.float32), masks


@pytest.fixture(scope="module")
def trained_model():
    return _train_tiny_model()


def _train_tiny_model():
    keras.utils.set_random_seed(0)
    # ResNet normalisation is caffe-style (RGB->BGR flip, mean subtraction): the int8
    # export must rewrite the flip, which TFLite mis-quantizes as REVERSE_V2.
    model = _tiny_model(num_classes=len(COLOURS))
    images, masks = _easy_data(48)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, masks[..., None], batch_size=8, epochs=20, verbose=0)
    return model


def test_tflite_int8_uint8_input_on_trained_model(tmp_path, trained_model):
    images, masks = _easy_data(16, seed=1)
    ref = keras.ops.convert_to_numpy(trained_model(images)).argmax(-1)
    assert (ref == masks).mean() > 0.9, "the tiny model did not learn the easy task"

    calib = tf.data.Dataset.from_tensor_slices(
        {"images": images[:8], "segmentation_masks": masks[:8, ..., None]}
    ).batch(4)
    path = tmp_path / "int8.tflite"
    info = kd.export.tflite(
        trained_model,
        path,
        quantization="int8",
        representative_data=calib,
        input_size=(64, 64),
        uint8_input=True,
        sample_data=(images[8:], masks[8:]),
        num_parity_images=8,
        verbose=False,
    )
    assert info["input"]["dtype"] == "uint8"
    assert "miou_delta" in info["parity"] and abs(info["parity"]["miou_delta"]) < 0.05
    assert info["calibration_images"] == 8
    # ImageNormalization flips RGB->BGR with a gather: no REVERSE_V2 (which TFLite's int8
    # quantizer gets wrong) reaches the model.
    assert "REVERSE_V2" not in _op_names(path) and "GATHER" in _op_names(path)

    agree = []
    for image, r in zip(images[8:], ref[8:]):
        agree.append((_run_tflite(path, image).argmax(-1) == r).mean())
    assert np.mean(agree) >= 0.95
    assert info["parity"]["argmax_agreement"] == pytest.approx(np.mean(agree), abs=1e-6)
    ops = _op_names(path)
    assert "CONV_2D" in ops and not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}

    # The parity gate: the agreement the interpreter measured passes, anything above fails
    # and writes nothing.
    measured = info["parity"]["argmax_agreement"]
    assert measured < 1.0, "int8 agreed on every pixel: the gate test needs a harder case"
    gated = tmp_path / "gated.tflite"
    kwargs = dict(quantization="int8", representative_data=calib, input_size=(64, 64),
                  uint8_input=True, sample_data=(images[8:], masks[8:]), num_parity_images=8,
                  verbose=False)
    kd.export.tflite(trained_model, gated, min_argmax_agreement=measured, **kwargs)
    os.remove(gated)
    os.remove(str(gated) + ".json")
    with pytest.raises(TFLiteExportError, match="min_argmax_agreement"):
        kd.export.tflite(trained_model, gated, min_argmax_agreement=measured + 1e-6, **kwargs)
    assert not gated.exists() and not os.path.exists(str(gated) + ".json")


def test_tflite_docstring_example_runs(tmp_path, monkeypatch, trained_model):
    doc = kd.export.tflite.__doc__
    code = doc.split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    namespace = {"kd": kd, "model": trained_model}
    exec(compile(textwrap.dedent(code), "tflite-docstring", "exec"), namespace)
    info = namespace["info"]
    assert (tmp_path / "dlv3p_int8.tflite").exists() and info["input"]["dtype"] == "uint8"
    assert info["input"]["shape"] == [1, 65, 65, 3] and info["calibration_images"] == 16
    assert _op_names(tmp_path / "dlv3p_int8.tflite") == set(info["ops"]["op_counts"])


# -- SavedModel ----------------------------------------------------------------------------


def test_saved_model_uint8_signature_matches_keras(tmp_path):
    model = _tiny_model()
    path = tmp_path / "sm"
    info = kd.export.saved_model(model, str(path), metadata={"recipe": "test"}, verbose=False)
    # float32 graph vs eager: oneDNN fuses differently (3.2e-5 measured on an AVX-512 CPU).
    assert info["parity"]["max_abs_diff_probabilities"] < 1e-4
    sidecar = json.loads((tmp_path / "sm.json").read_text())
    assert sidecar["signature"]["name"] == "serving_default"
    assert sidecar["kind"] == "saved_model" and sidecar["metadata"] == {"recipe": "test"}
    assert sidecar["model"]["num_classes"] == 5

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(5)
    for shape in [(1, 33, 47, 3), (2, 64, 64, 3)]:
        pixels = rng.integers(0, 256, shape).astype(np.uint8)
        out = serve(images=tf.constant(pixels))
        ref = _softmax(keras.ops.convert_to_numpy(model(pixels.astype(np.float32))))
        assert out["probabilities"].shape == shape[:3] + (5,)
        assert out["labels"].dtype == tf.int32 and out["labels"].shape == shape[:3]
        np.testing.assert_allclose(out["probabilities"].numpy(), ref, atol=1e-4)
        np.testing.assert_array_equal(out["labels"].numpy(), ref.argmax(-1))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(images=tf.zeros((1, 8, 8, 3), tf.float32))  # the signature is uint8 only
