"""Golden outputs: every preset (and TF DeepLab architecture) at 64 px, with fixed weights
and a fixed image, gives the logits stored in tests/golden/<name>.npz (written by
tests/golden/make_golden.py), so an architectural change (a layer, rate, stride, resize or weight order) fails here."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden"))
from make_golden import HERE, TF_DEEPLAB_ARCHS, golden_outputs  # noqa: E402

from keras_deeplab.models.presets import PRESETS  # noqa: E402

# Presets above ~30M parameters take tens of seconds to build on two CPU cores.
LARGE = {name for name in PRESETS if "resnet101" in name or "vgg16" in name or "fcn" in name}
LARGE.add("deeplabv3plus_xception65")
NAMES = [*PRESETS, *TF_DEEPLAB_ARCHS]


def test_every_preset_has_a_golden_file_under_100_kb():
    for name in NAMES:
        path = os.path.join(HERE, f"{name}.npz")
        assert os.path.exists(path), f"run tests/golden/make_golden.py {name}"
        assert os.path.getsize(path) < 100_000


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.large) if n in LARGE else n
                                  for n in sorted(NAMES)])
def test_preset_matches_its_golden_output(name):
    stored = np.load(os.path.join(HERE, f"{name}.npz"))
    got = golden_outputs(name)
    assert int(got["trainable_params"]) == int(stored["trainable_params"])
    assert int(got["num_weights"]) == int(stored["num_weights"])
    scale = max(float(stored["stats"][1]), 1e-3)  # std of the stored logits
    np.testing.assert_allclose(got["logits_slice"], stored["logits_slice"],
                               rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_allclose(got["stats"], stored["stats"], rtol=1e-3, atol=1e-3 * scale)
    # float rounding may flip near-ties only
    assert np.mean(got["labels"] == stored["labels"]) > 0.99
