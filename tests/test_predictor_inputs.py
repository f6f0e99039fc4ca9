"""Predictor input conventions (issue 13, item 9): [0, 1] floats, fixed-size aspect ratio."""

import warnings

import keras
import numpy as np
import pytest

import keras_deeplab as kd


class FixedRunner:
    """A runner with a fixed 4x8 input (as a TFLite export): logits from the red channel."""

    fixed_input_size = (4, 8)
    num_classes = 2
    kind = "fake"
    path = None

    def __init__(self):
        self.shapes = []

    def __call__(self, images):
        self.shapes.append(images.shape[1:3])
        red = images[..., :1] / 255.0
        return np.concatenate([5 * red, 5 * (1 - red)], axis=-1).astype(np.float32)


def test_float_image_in_0_1_is_refused_and_times_255_accepted():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
    predictor = kd.inference.Predictor(model)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"all its values in \[0, 1\].*image \* 255"):
        predictor.predict(image / 255.0)
    np.testing.assert_array_equal(predictor.predict(image.astype(np.float64)).labels,
                                  predictor.predict(image).labels)
    # an all-black float image is not a [0, 1] image in disguise: accepted
    assert predictor.predict(np.zeros((5, 6, 3), np.float32)).labels.shape == (5, 6)


def test_fixed_size_model_warns_when_it_squashes_and_tiles_on_request():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:, 0] = 255  # right half red: class 0 there, class 1 on the left
    runner = FixedRunner()
    with pytest.warns(UserWarning, match=r"WITHOUT keeping its aspect ratio.*"
                                         r"sliding_window=\(4, 8\)"):
        kd.inference.Predictor(runner, palette=[(0, 0, 0), (1, 1, 1)]).predict(image)
    assert runner.shapes == [(4, 8)]
    # same aspect ratio (8x16 for a 4x8 model): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kd.inference.Predictor(FixedRunner(), palette=[(0, 0, 0), (1, 1, 1)]).predict(
            np.zeros((8, 16, 3), np.uint8))
    # tiling at the model's size keeps the aspect ratio: no warning, only 4x8 tiles, and the
    # labels are the independent expectation (red right half -> class 0)
    tiled = FixedRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = kd.inference.Predictor(tiled, sliding_window=(4, 8),
                                        palette=[(0, 0, 0), (1, 1, 1)]).predict(image).labels
    assert set(tiled.shapes) == {(4, 8)}
    expected = np.ones((8, 8), np.int32)
    expected[:, 4:] = 0
    np.testing.assert_array_equal(labels, expected)
