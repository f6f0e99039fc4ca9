"""fit + EvaluateMeanIoU + StopOnNaN + sliding-window/TTA evaluation on JAX and PyTorch."""

import numpy as np
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


DEVICE_AUGMENT_SCRIPT = r"""
import json
import numpy as np
import keras
import tensorflow as tf
import keras_deeplab as kd
from keras_deeplab.data import augment as A

rng = np.random.default_rng(0)
img = rng.integers(0, 256, (3, 37, 41, 3)).astype(np.uint8)
msk = rng.integers(0, 6, (3, 37, 41, 1)).astype(np.int32)
cfg = A.AugmentConfig(max_rotation=15, brightness=0.1, contrast=0.2, saturation=0.3, hue=0.1,
                      blur_prob=0.5, scale_step=0.25)
p = np.concatenate([rng.uniform(size=(3, A.NUM_RANDOM)), [[37, 41], [30, 41], [37, 20]]], 1)
p = p.astype(np.float32)
ref_i, ref_m = A.warp_batch(A._TFOps(), tf.constant(img), tf.constant(msk), tf.constant(p),
                            (33, 29), cfg)
out = kd.data.SegmentationAugmentation((33, 29), cfg)(
    {"images": img, "segmentation_masks": msk, "augment_params": p})
got_i = keras.ops.convert_to_numpy(out["images"])
got_m = keras.ops.convert_to_numpy(out["segmentation_masks"])
ds = kd.data.synthetic("train", num_images=16, image_size=48, batch_size=4, crop_size=40,
                       output="tuple", augment_on="device")
model = kd.models.PixelClassifier(num_classes=6)
trainer = kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation(40))
trainer.compile(optimizer="adam", loss=kd.losses.CrossEntropy())
hist = trainer.fit(ds, epochs=2, verbose=0).history
print(json.dumps({"backend": keras.backend.backend(),
                  "image_err": float(np.abs(got_i - ref_i.numpy()).max()),
                  "mask_diff": int((got_m != ref_m.numpy()).sum()), "loss": hist["loss"]}))
"""


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_device_augmentation_on_other_backends(backend):
    # The keras.ops path on JAX/torch == the tf.data path on the same params, and model.fit
    # on an augment_on="device" pipeline runs the augmentation inside the train step.
    res = run_python(DEVICE_AUGMENT_SCRIPT, env={"KERAS_BACKEND": backend}, timeout=400)
    assert res["backend"] == backend
    assert res["image_err"] < 1e-3 and res["mask_diff"] == 0
    assert all(np.isfinite(res["loss"]))
