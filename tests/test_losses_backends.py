"""Losses, metrics and the schedule give the TensorFlow values on JAX and PyTorch."""

import numpy as np
import pytest
from test_training_helpers import run_python

from keras_deeplab.training import losses, metrics
from keras_deeplab.training.schedules import PolyDecay

SCRIPT = r"""
import json
import numpy as np
import keras
from keras_deeplab.training import losses, metrics
from keras_deeplab.training.schedules import PolyDecay

rng = np.random.default_rng(0)
labels = rng.integers(0, 5, (2, 9, 7, 1)).astype(np.int32)
labels[rng.random(labels.shape) < 0.2] = 255
logits = (2.0 * rng.standard_normal((2, 9, 7, 5))).astype(np.float32)
values = {}
for name, loss in [("ce", losses.CrossEntropy(class_weights=[1, 2, 3, 4, 5])),
                   ("dice", losses.DiceLoss()), ("lovasz", losses.LovaszSoftmax()),
                   ("lovasz_img", losses.LovaszSoftmax(per_image=True)),
                   ("ohem", losses.OHEMCrossEntropy(min_kept=20))]:
    values[name] = float(keras.ops.convert_to_numpy(loss(labels, logits)))
m = metrics.MeanIoU(5)
m.update_state(labels, logits)
values["miou"] = float(keras.ops.convert_to_numpy(m.result()))
values["poly"] = float(keras.ops.convert_to_numpy(PolyDecay(0.01, 100, 10)(37)))
print(json.dumps({"backend": keras.backend.backend(), "values": values}))
"""


def _reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 9, 7, 1)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    logits = (2.0 * rng.standard_normal((2, 9, 7, 5))).astype(np.float32)
    values = {}
    for name, loss in [("ce", losses.CrossEntropy(class_weights=[1, 2, 3, 4, 5])),
                       ("dice", losses.DiceLoss()), ("lovasz", losses.LovaszSoftmax()),
                       ("lovasz_img", losses.LovaszSoftmax(per_image=True)),
                       ("ohem", losses.OHEMCrossEntropy(min_kept=20))]:
        values[name] = float(loss(labels, logits))
    m = metrics.MeanIoU(5)
    m.update_state(labels, logits)
    values["miou"] = float(m.result())
    values["poly"] = float(PolyDecay(0.01, 100, 10)(37))
    return values


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_values_on_other_backends(backend):
    res = run_python(SCRIPT, env={"KERAS_BACKEND": backend})
    assert res["backend"] == backend
    ref = _reference()
    for key, value in ref.items():
        assert res["values"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
