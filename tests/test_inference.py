"""Predictor over Keras / SavedModel / TFLite, palettes, sliding window, folder mode."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_deeplab as kd
from keras_deeplab.inference import DenseCRF, Predictor
from keras_deeplab.inference.engine import PredictionEngine, window_starts


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return kd.models.DeepLabV3Plus(
        num_classes=4, backbone="resnet18", backbone_kwargs={"base_filters": 8},
        output_stride=16, aspp_filters=16, decoder_filters=16,
    )


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {
        "keras": str(root / "m.keras"),
        "saved_model": str(root / "sm"),
        "tflite": str(root / "m.tflite"),
        "tflite_fixed": str(root / "fixed.tflite"),
    }
    model.save(paths["keras"])
    kd.export.saved_model(model, paths["saved_model"], verbose=False)
    kd.export.tflite(model, paths["tflite"], verbose=False)
    kd.export.tflite(model, paths["tflite_fixed"], input_size=(48, 48), verbose=False)
    return paths


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3)).astype(np.uint8)


def _reference(model, image):
    """Softmax of ``model.predict`` (Keras' compiled predict step, as the Predictor runs)."""
    return _softmax(model.predict(image[None].astype(np.float32), verbose=0)[0])


# -- palettes ----------------------------------------------------------------------------


def test_cityscapes_palette_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    train = sorted((lb.trainId, lb.color) for lb in labels if 0 <= lb.trainId < 255)
    np.testing.assert_array_equal(kd.inference.CITYSCAPES_PALETTE, [c for _, c in train])


def test_voc_palette_and_colorize():
    voc = kd.inference.VOC_PALETTE
    assert voc.shape == (21, 3)
    # Known PASCAL VOC colours: background, aeroplane, person (15), tvmonitor (20).
    assert tuple(voc[0]) == (0, 0, 0) and tuple(voc[1]) == (128, 0, 0)
    assert tuple(voc[15]) == (192, 128, 128) and tuple(voc[20]) == (0, 64, 128)
    labels = np.array([[0, 1], [15, 255]])
    colour = kd.inference.colorize(labels, "voc")
    np.testing.assert_array_equal(colour[1, 1], (224, 224, 192))  # VOC void colour
    np.testing.assert_array_equal(colour[1, 0], voc[15])
    custom = kd.inference.colorize(labels.clip(0, 1), [(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(custom[0], [(1, 2, 3), (4, 5, 6)])
    img = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(
        kd.inference.overlay(img, colour, alpha=0.25),
        np.round(0.75 * 100 + 0.25 * colour.astype(np.float64)).astype(np.uint8),
    )


def test_palette_shorter_than_classes_is_an_error(model):
    with pytest.raises(ValueError, match="2 colours but the model predicts 4 classes"):
        Predictor(model, palette=[(0, 0, 0), (255, 255, 255)])
    with pytest.raises(ValueError, match="Unknown palette"):
        kd.inference.get_palette("rainbow")
    kd.inference.get_palette("cityscapes", num_classes=19)
    with pytest.raises(ValueError, match="19 colours"):
        kd.inference.get_palette("cityscapes", num_classes=21)


# -- predictor ----------------------------------------------------------------------------


def test_predictor_keras_model_matches_model(model):
    pred = Predictor(model, palette="voc")
    image = _image(45, 61)
    result = pred.predict(image)
    ref = _reference(model, image)
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-6)
    np.testing.assert_array_equal(result.labels, ref.argmax(-1))
    np.testing.assert_array_equal(pred(image), ref.argmax(-1))
    assert result.color().shape == (45, 61, 3) and result.overlay().dtype == np.uint8
    np.testing.assert_array_equal(result.color(), kd.inference.colorize(ref.argmax(-1), "voc"))


@pytest.mark.parametrize("fmt", ["keras", "saved_model", "tflite"])
def test_predictor_runs_every_format(model, exported, fmt):
    pred = Predictor(exported[fmt])
    assert pred.num_classes == 4
    image = _image(39, 50, seed=2)
    ref = _reference(model, image)
    got = pred.predict(image).probabilities
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # With a CRF: the refinement of this format's own probabilities.
    crf = DenseCRF(iterations=2)
    with_crf = Predictor(exported[fmt], crf=crf).predict(image)
    assert with_crf.crf
    np.testing.assert_array_equal(with_crf.probabilities, crf.refine(image, got))


def test_fixed_size_tflite_is_resized_and_mismatches_are_explained(model, exported):
    pred = Predictor(exported["tflite_fixed"])
    assert pred.input_size == (48, 48)
    image = _image(30, 70, seed=3)
    got = pred.predict(image).probabilities
    # Reference: the same resize -> model -> resize back, done with the Keras model.
    keras_pred = Predictor(model, input_size=(48, 48))
    np.testing.assert_allclose(got, keras_pred.predict(image).probabilities, atol=1e-4)
    assert got.shape == (30, 70, 4)
    with pytest.raises(ValueError, match="expects 48x48"):
        Predictor(exported["tflite_fixed"], input_size=(64, 64))
    with pytest.raises(ValueError, match="expects 48x48"):
        Predictor(exported["tflite_fixed"], sliding_window=(32, 32))
    from keras_deeplab.export import TFLiteRunner

    with pytest.raises(ValueError, match="fixed input size 48x48"):
        TFLiteRunner(exported["tflite_fixed"])(np.zeros((1, 40, 48, 3), np.float32))


def test_unknown_model_types(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00")
    with pytest.raises(kd.inference.UnknownModelTypeError, match="model.onnx"):
        Predictor(str(bogus))
    with pytest.raises(kd.inference.UnknownModelTypeError, match="saved_model.pb"):
        Predictor(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        Predictor(str(tmp_path / "missing.keras"))


def test_sliding_window_equals_full_image_for_a_pointwise_model():
    # A 1x1-conv model is translation invariant per pixel: tiling must be exact.
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(3, 1)(inp))
    image = _image(50, 77, seed=4).astype(np.float32)
    full = keras.ops.convert_to_numpy(model(image[None]))[0]
    tiled = PredictionEngine(model, sliding_window=(32, 32), overlap=0.25, batch_size=3)
    np.testing.assert_allclose(tiled.probabilities(image), _softmax(full), atol=1e-5)
    # smaller than the window: one window of the image's size
    np.testing.assert_allclose(tiled.probabilities(image[:20, :25]), _softmax(full[:20, :25]),
                               atol=1e-5)
    assert window_starts(77, 32, 0.25) == [0, 24, 45]  # stride ceil(32 * 0.75) = 24
    pred = Predictor(model, sliding_window=(32, 32), palette="voc")
    np.testing.assert_allclose(pred.predict(image).probabilities, _softmax(full), atol=1e-5)


def test_fixed_size_tflite_tiles_pad_and_crop(model, exported):
    # Reference: the Keras model run on each window, padded by symmetric reflection to the
    # TFLite model's fixed 48x48 input and cropped back; softmax averaged in NumPy.
    image = _image(30, 70, seed=9)
    pred = Predictor(exported["tflite_fixed"], sliding_window=(48, 48))
    got = pred.predict(image).probabilities
    padded = np.pad(image.astype(np.float32), ((0, 18), (0, 0), (0, 0)), mode="symmetric")
    total, count = np.zeros((30, 70, 4)), np.zeros((30, 70, 1))
    for x0 in (0, 22):  # stride ceil(48 * 2/3) = 32 > 70 - 48: the last window at 22
        tile = padded[None, :, x0:x0 + 48]
        total[:, x0:x0 + 48] += _softmax(keras.ops.convert_to_numpy(model(tile))[0])[:30]
        count[:, x0:x0 + 48] += 1
    np.testing.assert_allclose(got, total / count, atol=1e-4)


def test_predictor_output_stride_and_flip(model):
    # Reference: the same architecture built at OS8 with the OS16 weights, run directly on
    # the image and its mirror; probabilities averaged in NumPy.
    reference = kd.models.DeepLabV3Plus(
        num_classes=4, backbone="resnet18", backbone_kwargs={"base_filters": 8},
        output_stride=8, aspp_filters=16, decoder_filters=16,
    )
    reference.set_weights(model.get_weights())
    image = _image(40, 56, seed=10)
    x = image[None].astype(np.float32)
    direct = _softmax(keras.ops.convert_to_numpy(reference(x))[0])
    mirrored = _softmax(keras.ops.convert_to_numpy(reference(x[:, :, ::-1].copy()))[0])[:, ::-1]
    pred = Predictor(model, output_stride=8, flip=True, palette="voc")
    assert pred.output_stride == 8 and pred.flip and model.output_stride == 16
    np.testing.assert_allclose(pred.predict(image).probabilities, (direct + mirrored) / 2,
                               atol=1e-5)
    with pytest.raises(ValueError, match="output_stride=8 needs a Keras model"):
        Predictor(lambda x: x, output_stride=8)


def test_predictor_with_crf_refines_probabilities(model):
    crf = DenseCRF(iterations=3)
    pred = Predictor(model, crf=crf)
    image = _image(40, 40, seed=5)
    plain = pred.predict(image, crf=False)
    refined = pred.predict(image)
    assert refined.crf and not plain.crf
    np.testing.assert_array_equal(refined.probabilities, crf.refine(image, plain.probabilities))
    batch = pred.predict_batch([image, _image(33, 41, seed=6)])
    np.testing.assert_array_equal(batch[0].probabilities, refined.probabilities)


def test_predict_folder_reports_bad_files_and_writes_outputs(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    images = {"a": _image(30, 40, seed=7), "b": _image(25, 33, seed=8)}
    Image.fromarray(images["a"]).save(src / "a.png")
    Image.fromarray(images["b"]).save(src / "b.jpg", quality=100)
    (src / "notes.txt").write_text("not an image")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    Image.fromarray(images["a"][..., 0]).save(src / "gray.png")  # grayscale is converted

    pred = Predictor(model, crf=DenseCRF(iterations=2, num_workers=2))
    report = pred.predict_folder(str(src), str(tmp_path / "out"), progress=False)
    assert sorted(os.path.basename(p) for p in report["failed"]) == ["broken.png", "notes.txt"]
    assert "notes.txt" in capsys.readouterr().out
    assert len(report["written"]) == 3
    written = report["written"][str(src / "a.png")]
    labels = np.asarray(Image.open(written["labels"]))
    expected = pred.predict(str(src / "a.png"))
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_array_equal(np.asarray(Image.open(written["color"]))[..., :3], expected.color())
    np.testing.assert_array_equal(np.asarray(Image.open(written["overlay"])), expected.overlay())


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("hello")
    with pytest.raises(kd.inference.ImageReadError, match="x.jpg"):
        kd.inference.read_image(str(bad))
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((4, 5, 4), np.uint8)).save(rgba)
    assert kd.inference.read_image(str(rgba)).shape == (4, 5, 3)
