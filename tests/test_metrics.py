"""Metrics against a NumPy confusion matrix, streaming, and under MirroredStrategy."""

import keras
import numpy as np
import pytest
from test_training_helpers import run_python

from keras_deeplab.training import metrics

IGNORE = 255


def np_confusion(labels, preds, num_classes):
    labels = labels.reshape(-1)
    preds = preds.reshape(-1)
    valid = labels != IGNORE
    return np.bincount(num_classes * labels[valid] + preds[valid],
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def np_iou(cm):
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1) - tp
    iou = np.full(len(cm), np.nan)
    iou[denom > 0] = tp[denom > 0] / denom[denom > 0]
    return iou


def _batches(seed=0, n=3, c=4):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        labels = rng.integers(0, c, (2, 6, 5, 1))
        labels[rng.random(labels.shape) < 0.25] = IGNORE
        labels[labels == 3] = 0  # class 3 never in the labels ...
        logits = rng.standard_normal((2, 6, 5, c)).astype(np.float32)
        out.append((labels.astype(np.int32), logits))
    return out


def test_streaming_mean_iou_per_class_and_accuracy():
    c = 4
    batches = _batches(c=c)
    miou, acc = metrics.MeanIoU(c), metrics.PixelAccuracy(c)
    class_ious = metrics.per_class_iou_metrics(c, ["a", "b", "c", "d"])
    cm = np.zeros((c, c), np.int64)
    for labels, logits in batches:
        for m in [miou, acc, *class_ious]:
            m.update_state(labels, logits)
        cm += np_confusion(labels[..., 0], logits.argmax(-1), c)
    ref = np_iou(cm)
    assert np.isfinite(ref[3]) and ref[3] == 0.0  # ... but predicted: IoU 0, counted
    np.testing.assert_array_equal(miou.confusion_matrix(), cm)
    np.testing.assert_allclose(float(miou.result()), np.nanmean(ref), rtol=1e-6)
    np.testing.assert_allclose(miou.per_class_iou(), ref, rtol=1e-6)
    np.testing.assert_allclose(float(acc.result()), np.trace(cm) / cm.sum(), rtol=1e-6)
    for k, m in enumerate(class_ious):
        assert m.name == "iou_" + "abcd"[k]
        np.testing.assert_allclose(float(m.result()), ref[k], rtol=1e-6)


def test_absent_class_left_out_of_mean():
    labels = np.array([[[0], [1]], [[1], [IGNORE]]], np.int32)[None]
    logits = np.eye(3, dtype=np.float32)[np.array([[0, 1], [1, 2]])][None]  # 2 predicted on void
    m = metrics.MeanIoU(3)
    m.update_state(labels, logits)
    iou = m.per_class_iou()
    assert iou[0] == 1.0 and iou[1] == 1.0 and np.isnan(iou[2])
    assert float(m.result()) == pytest.approx(1.0)


def test_metric_config_round_trip():
    for m in [metrics.MeanIoU(7, ignore_class=None), metrics.PixelAccuracy(5),
              metrics.ClassIoU(5, 3, name="iou_car")]:
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
        assert type(restored) is type(m)
        assert restored.get_config() == m.get_config()
    with pytest.raises(ValueError, match="class_id"):
        metrics.ClassIoU(3, 3)


def test_metrics_in_fit_and_evaluate():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (6, 8, 8, 1)).astype(np.int32)
    labels[:, :2] = IGNORE
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1)])
    model.compile(loss="mse", metrics=[metrics.MeanIoU(3), metrics.PixelAccuracy(3)])
    out = model.evaluate(images, labels, batch_size=4, return_dict=True, verbose=0)
    cm = np_confusion(labels[..., 0], model.predict(images, verbose=0).argmax(-1), 3)
    np.testing.assert_allclose(out["mean_iou"], np.nanmean(np_iou(cm)), rtol=1e-5)
    np.testing.assert_allclose(out["pixel_accuracy"], np.trace(cm) / cm.sum(), rtol=1e-5)


MIRRORED_METRIC_SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_deeplab.training import metrics

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 8, 8, 3)).astype(np.float32)
labels = rng.integers(0, 4, (8, 8, 8, 1)).astype(np.int32)
labels[:4, :5] = 255  # replica 0 sees many more ignored pixels than replica 1
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1)])
    model.compile(loss="mse", metrics=[metrics.MeanIoU(4), metrics.PixelAccuracy(4),
                                       metrics.ClassIoU(4, 2)])
out = model.evaluate(images, labels, batch_size=8, return_dict=True, verbose=0)
preds = model.predict(images, batch_size=8, verbose=0).argmax(-1)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "metrics": out,
                  "preds": preds.tolist(), "labels": labels[..., 0].tolist()}))
"""


def test_mean_iou_under_mirrored_strategy_two_cpus():
    res = run_python(MIRRORED_METRIC_SCRIPT)
    assert res["replicas"] == 2
    labels, preds = np.array(res["labels"]), np.array(res["preds"])
    cm = np_confusion(labels, preds, 4)
    ref = np_iou(cm)
    np.testing.assert_allclose(res["metrics"]["mean_iou"], np.nanmean(ref), rtol=1e-5)
    np.testing.assert_allclose(res["metrics"]["pixel_accuracy"], np.trace(cm) / cm.sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(res["metrics"]["iou_2"], ref[2], rtol=1e-5)
