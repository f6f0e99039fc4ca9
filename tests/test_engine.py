"""The one prediction engine: evaluate == Predictor, and both against a NumPy reference.

References: windows placed by hand from the documented rule, each window / scale / flip run
through the Keras model directly (``model.predict``), softmax in NumPy, resizing with
``tf.image.resize``, and the confusion matrix counted with ``np.bincount``.
"""

import keras
import numpy as np
import pytest

import keras_deeplab as kd
from keras_deeplab.inference import Predictor
from keras_deeplab.inference.engine import PredictionEngine, window_starts

IGNORE = 255
SETTINGS = [
    dict(sliding_window=32, overlap=1 / 3),
    dict(scales=(0.75, 1.0, 1.25)),
    dict(flip=True),
    dict(sliding_window=32, overlap=1 / 3, scales=(0.75, 1.25), flip=True),
]


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def context_model():
    """Two 5x5 convolutions: a 9-pixel receptive field, so windows, scales and flips matter."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 5, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(4, 5, padding="same")(x)
    return keras.Model(inputs, outputs)


def _images(n=3, h=50, w=70, seed=0):
    """Whole-number pixel values, as decoded images have (the Predictor takes uint8)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3)).astype(np.float32)


def _reference_probabilities(model, image, sliding_window=None, overlap=1 / 3, scales=(1.0,),
                             flip=False):
    """NumPy / tf.image reference of the documented engine, one image (H, W, 3)."""
    import tensorflow as tf

    h, w = image.shape[:2]
    views = []
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = image if size == (h, w) else tf.image.resize(image, size, "bilinear").numpy()
        for mirrored in (False, True) if flip else (False,):
            v = x[:, ::-1] if mirrored else x
            vh, vw = v.shape[:2]
            if sliding_window is None:
                p = _softmax(model.predict(v[None].copy(), verbose=0)[0])
            else:
                total = np.zeros((vh, vw, 4))
                count = np.zeros((vh, vw, 1))
                wh, ww = min(sliding_window, vh), min(sliding_window, vw)
                for y in window_starts(vh, sliding_window, overlap):
                    for x0 in window_starts(vw, sliding_window, overlap):
                        tile = v[y:y + wh, x0:x0 + ww][None].copy()
                        total[y:y + wh, x0:x0 + ww] += _softmax(model.predict(tile, verbose=0)[0])
                        count[y:y + wh, x0:x0 + ww] += 1
                p = total / count
            if mirrored:
                p = p[:, ::-1]
            if p.shape[:2] != (h, w):
                p = tf.image.resize(p.copy(), (h, w), "bilinear").numpy()
            views.append(p)
    return np.mean(views, 0)


def test_windows_of_the_issue_image():
    # The 50x70 image with 32x32 windows and overlap 1/3 of issue 10: one set of positions.
    assert window_starts(50, 32, 1 / 3) == [0, 18]
    assert window_starts(70, 32, 1 / 3) == [0, 22, 38]


@pytest.mark.parametrize("settings", SETTINGS)
def test_engine_matches_numpy_reference(context_model, settings):
    image = _images(n=1)[0]
    got = PredictionEngine(context_model, **settings).probabilities(image)
    want = _reference_probabilities(context_model, image, **settings)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The setting changes the prediction, so agreement is not vacuous.
    plain = _softmax(context_model.predict(image[None], verbose=0)[0])
    assert np.abs(got - plain).max() > 1e-3


@pytest.mark.parametrize("settings", SETTINGS)
def test_evaluate_scores_exactly_the_predictor_labels(context_model, settings):
    images = _images()
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, images.shape[:3]).astype(np.int32)
    masks[:, :4] = IGNORE
    pred = Predictor(context_model, palette="voc", **settings)
    labels = np.stack([pred(image) for image in images])
    valid = masks != IGNORE
    cm = np.bincount(4 * masks[valid] + labels[valid], minlength=16).reshape(4, 4)
    # One image per batch, as the Predictor runs them: the same model calls, bit for bit.
    batches = [(images[i:i + 1], masks[i:i + 1, ..., None]) for i in range(len(images))]
    results = kd.training.evaluate(context_model, batches, progress=False, **settings)
    np.testing.assert_array_equal(results["confusion_matrix"], cm)
    # And evaluation's labels are not those of the plain whole-image pass.
    plain = context_model.predict(images, verbose=0).argmax(-1)
    assert (plain != labels).any()


def test_fixed_size_runner_pads_runs_and_crops(context_model):
    """A fixed-size model (like a TFLite export) gets smaller windows padded, then cropped."""
    calls = []

    class FixedRunner:
        fixed_input_size = (32, 32)
        num_classes = 4
        kind = "fixed"

        def __call__(self, x):
            calls.append(x.shape)
            assert x.shape[1:3] == (32, 32)
            return context_model.predict(x, verbose=0)

    image = _images(n=1, h=20, w=45)[0]
    got = PredictionEngine(FixedRunner(), sliding_window=32).probabilities(image)
    padded = np.pad(image, ((0, 12), (0, 0), (0, 0)), mode="symmetric")
    want = np.zeros((20, 45, 4))
    count = np.zeros((20, 45, 1))
    for x0 in (0, 13):  # stride ceil(32 * 2/3) = 22 > 45 - 32 = 13: two windows
        tile = padded[:, x0:x0 + 32][None]
        want[:, x0:x0 + 32] += _softmax(context_model.predict(tile, verbose=0)[0])[:20]
        count[:, x0:x0 + 32] += 1
    np.testing.assert_allclose(got, want / count, atol=2e-5)
    assert calls and all(shape[1:3] == (32, 32) for shape in calls)
    with pytest.raises(ValueError, match="expects 32x32"):
        PredictionEngine(FixedRunner(), sliding_window=24)
    with pytest.raises(ValueError, match="sliding_window=\\(32, 32\\)"):
        PredictionEngine(FixedRunner(), scales=(2.0,)).probabilities(image)


def test_settings_are_checked():
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    for kwargs, match in [(dict(overlap=1.0), "overlap"), (dict(scales=()), "scales"),
                          (dict(scales=(0.0,)), "scales"), (dict(sliding_window=0), "positive"),
                          (dict(batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            PredictionEngine(model, **kwargs)
    with pytest.raises(ValueError, match="Keras model"):
        PredictionEngine(lambda x: x, output_stride=8)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        PredictionEngine(model).probabilities(np.zeros((4, 4)))
