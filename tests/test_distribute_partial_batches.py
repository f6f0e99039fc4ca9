"""No replica gets an empty batch: evaluation on 2 logical CPUs with oneDNN on (issue 13, item 6).

Smallest input: 5 images, global batch 2 (last batch partial) or 1, MirroredStrategy over 2
logical CPUs. With oneDNN's Conv2D (TensorFlow's default on x86) an empty replica batch fails
("input depth must be evenly divisible by filter depth"); the script first shows that the
unpadded input still fails that way (so oneDNN is really on), then that the library's
pipelines, `kd.data.distribute`, `model.evaluate` and `kd.training.evaluate` give the
single-device scores.
"""

import numpy as np
from test_training_helpers import run_python

SCRIPT = r"""
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_deeplab as kd
from keras_deeplab.np_metrics import confusion_matrix, mean_iou

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
labels = rng.integers(0, 3, (5, 8, 8, 1)).astype(np.int32)
labels[1, :3] = 255

def build():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))

single = build()
weights = single.get_weights()
reference_pred = single.predict(images, verbose=0).argmax(-1)
reference = mean_iou(confusion_matrix(labels[..., 0], reference_pred, 3))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"reference": reference, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
with strategy.scope():
    model = build()
    model.set_weights(weights)
    model.compile(loss=kd.losses.CrossEntropy(), metrics=[kd.metrics.MeanIoU(3)])
plain = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
try:
    model.evaluate(plain, verbose=0)
    out["unpadded"] = "no error"
except tf.errors.InvalidArgumentError as e:
    out["unpadded"] = str(e)[:2000]
source = kd.data.ArraySource(images, labels, 3)
for bs in (2, 1):
    with strategy.scope():  # built in the scope: padded to the 2 replicas
        ds = kd.data.make_pipeline(source, batch_size=bs, output="tuple")
    out[f"sizes_{bs}"] = [int(x.shape[0]) for x, _ in ds]
    out[f"evaluate_{bs}"] = model.evaluate(ds, verbose=0, return_dict=True)["mean_iou"]
    out[f"padded_images_{bs}"] = kd.training.evaluate(model, ds, progress=False)["num_images"]
    outside = kd.data.make_pipeline(source, batch_size=bs, output="tuple")  # not padded
    out[f"distribute_{bs}"] = model.evaluate(
        kd.data.distribute(outside, strategy), verbose=0, return_dict=True)["mean_iou"]
    out[f"kd_evaluate_{bs}"] = kd.training.evaluate(model, outside, progress=False,
                                                    batch_size=bs)["mean_iou"]
    out[f"kd_images_{bs}"] = kd.training.evaluate(model, outside, progress=False,
                                                  batch_size=bs)["num_images"]
print(json.dumps(out))
"""


def test_partial_and_single_batches_on_two_replicas_with_onednn():
    out = run_python(SCRIPT, env={"TF_ENABLE_ONEDNN_OPTS": "1"}, timeout=600)
    assert out["onednn"] == "1"
    # the fault is real on this machine: the unpadded last batch leaves replica 1 empty
    assert "input depth must be evenly divisible" in out["unpadded"] or \
        "must have the same size and shape" in out["unpadded"], out["unpadded"]
    assert out["sizes_2"] == [2, 2, 2] and out["sizes_1"] == [2] * 5
    for bs in (2, 1):
        for key in ("evaluate", "distribute", "kd_evaluate"):
            np.testing.assert_allclose(out[f"{key}_{bs}"], out["reference"], rtol=1e-6,
                                       err_msg=f"{key} batch {bs}")
        assert out[f"kd_images_{bs}"] == 5 and out[f"padded_images_{bs}"] == 5


def test_pad_batches_values():
    import tensorflow as tf

    from keras_deeplab.data.padding import pad_batches

    images = np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3) + 1
    masks = np.ones((3, 2, 2, 1), np.int32)
    tuples = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)
    got = [(x.numpy(), y.numpy()) for x, y in pad_batches(tuples, 2)]
    assert [x.shape[0] for x, _ in got] == [2, 2]
    np.testing.assert_array_equal(got[1][0][0], images[2])
    np.testing.assert_array_equal(got[1][0][1], np.zeros((2, 2, 3)))
    np.testing.assert_array_equal(got[1][1][1], np.full((2, 2, 1), 255))
    dicts = tf.data.Dataset.from_tensor_slices(
        {"images": images, "segmentation_masks": masks}).batch(1)
    got = list(pad_batches(dicts, 4))
    assert [int(b["images"].shape[0]) for b in got] == [4, 4, 4]
    np.testing.assert_array_equal(got[0]["segmentation_masks"].numpy()[1:], 255)
    np.testing.assert_array_equal(got[0]["images"].numpy()[1:], 0)
    assert got[0]["images"].shape[1:] == (2, 2, 3)  # static shape kept
