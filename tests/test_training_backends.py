"""fit + EvaluateMeanIoU + StopOnNaN + sliding-window/TTA evaluation on JAX and PyTorch."""

import pytest
from test_training_helpers import run_python

SCRIPT = r"""
import json
import numpy as np
import keras
import keras_deeplab as kd

rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (2, 40, 48, 3)).astype("float32")
y = rng.integers(0, 3, (2, 40, 48, 1)).astype("int32")
m = kd.models.from_preset("deeplabv3plus_tiny", num_classes=3)
m.compile(optimizer=kd.training.poly_sgd(0.01, 10), loss=kd.losses.LovaszSoftmax(),
          metrics=[kd.metrics.MeanIoU(3)])
cb = kd.callbacks.EvaluateMeanIoU([(x, y)], sliding_window=32, flip=True, verbose=0)
hist = m.fit(x, y, epochs=1, verbose=0, callbacks=[cb, kd.callbacks.StopOnNaN()]).history
probs = m.predict(x, verbose=0)
pred = probs.argmax(-1)
cm = np.bincount(3 * y[..., 0].ravel() + pred.ravel(), minlength=9).reshape(3, 3)
whole = kd.training.evaluate(m, [(x, y)], progress=False)
print(json.dumps({"backend": keras.backend.backend(), "val_miou": hist["val_miou"][-1],
                  "loss": hist["loss"][-1], "whole_cm": whole["confusion_matrix"].tolist(),
                  "cm": cm.tolist()}))
"""


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_loop_on_other_backends(backend):
    res = run_python(SCRIPT, env={"KERAS_BACKEND": backend}, timeout=400)
    assert res["backend"] == backend
    assert 0.0 <= res["val_miou"] <= 1.0 and res["loss"] > 0
    assert res["whole_cm"] == res["cm"]  # evaluate() == NumPy confusion of model.predict
