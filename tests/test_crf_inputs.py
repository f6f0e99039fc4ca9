"""DenseCRF refuses inputs it would silently mis-refine, naming the transform (issue 13, item 8)."""

import numpy as np
import pytest

from keras_deeplab.inference import DenseCRF

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
LOGITS = (3.0 * RNG.standard_normal((6, 7, 4))).astype(np.float32)
PROBS = np.exp(LOGITS - LOGITS.max(-1, keepdims=True))
PROBS /= PROBS.sum(-1, keepdims=True)


@pytest.mark.parametrize("image,probs,fragments", [
    (IMAGE, LOGITS, ["looks like logits", "softmax"]),
    (IMAGE, PROBS * 3.0 / 4.0 + 0.01, ["sum to 1", "normalise: probs / probs.sum"]),
    (IMAGE, 1 / (1 + np.exp(-LOGITS)), ["sum to 1", "sigmoid", "softmax"]),
    (IMAGE, np.where(np.arange(4) == 0, np.nan, PROBS), ["NaN", "model output"]),
    (IMAGE / 255.0, PROBS, ["[0, 1]", "np.round(image * 255).astype(np.uint8)"]),
    (IMAGE * 2.0 - 255.0, PROBS, ["[0, 255]", "not the model's normalised input"]),
])
def test_refine_refuses_and_names_the_transform(image, probs, fragments):
    with pytest.raises(ValueError) as info:
        DenseCRF(iterations=1).refine(image, probs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_the_named_fixes_are_accepted_and_float_images_in_0_255_equal_uint8():
    crf = DenseCRF(iterations=2)
    reference = crf.refine(IMAGE, PROBS)
    np.testing.assert_array_equal(crf.refine(IMAGE.astype(np.float32), PROBS), reference)
    scaled = np.round((IMAGE / 255.0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(crf.refine(scaled, PROBS), reference)
    unnormalised = PROBS * 3.0
    np.testing.assert_allclose(
        crf.refine(IMAGE, unnormalised / unnormalised.sum(-1, keepdims=True)), reference,
        atol=1e-6)
    np.testing.assert_allclose(reference.sum(-1), 1.0, atol=1e-4)
