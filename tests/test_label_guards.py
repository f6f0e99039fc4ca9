"""Labels outside the classes are refused by the compiled metrics and losses (issue 13, item 5).

Smallest input: ``MeanIoU(num_classes=19)`` given ``y = [0, 33]`` and a prediction ``[0, 1]``
reported 1.0 (Keras' own MeanIoU drops the 33). Right: an error naming 33, or NaN where the
backend cannot raise from inside a compiled step (XLA).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_training_helpers import run_python

import keras_deeplab as kd

Y = np.array([0, 33], np.int32).reshape(1, 1, 2, 1)
PRED = np.zeros((1, 1, 2, 19), np.float32)
PRED[0, 0, 0, 0] = PRED[0, 0, 1, 1] = 5.0  # argmax [0, 1]


def test_keras_meaniou_reports_a_perfect_score_on_this_input():
    # the fault being guarded against, measured on Keras' own metric
    m = keras.metrics.MeanIoU(num_classes=19, ignore_class=255, sparse_y_pred=False)
    m.update_state(Y[..., 0], PRED)
    assert float(m.result()) == pytest.approx(1.0)


@pytest.mark.parametrize("make", [lambda: kd.metrics.MeanIoU(num_classes=19),
                                  lambda: kd.metrics.PixelAccuracy(num_classes=19),
                                  lambda: kd.metrics.ClassIoU(19, class_id=0)])
def test_metrics_refuse_labels_outside_the_classes(make):
    metric = make()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"neither a class id in \[0, 19\) nor the ignore label 255.*value:\W*33"):
        metric.update_state(Y, PRED)
    # the same inside a tf.function (graph mode, as in model.fit without XLA)
    metric = make()
    with pytest.raises(tf.errors.InvalidArgumentError, match="labelIds -> trainIds"):
        tf.function(metric.update_state)(Y, PRED)


def test_valid_labels_still_score_as_before():
    m = kd.metrics.MeanIoU(num_classes=19)
    y = np.array([0, 255, 1], np.int32).reshape(1, 1, 3, 1)
    p = np.zeros((1, 1, 3, 19), np.float32)
    p[0, 0, 0, 0] = p[0, 0, 1, 3] = p[0, 0, 2, 0] = 5.0  # [0, (ignored), 0]
    m.update_state(y, p)
    # confusion: class 0 -> (tp 1, fp 1), class 1 -> (fn 1): IoU 0.5 and 0, mean 0.25
    assert float(m.result()) == pytest.approx(0.25)
    assert float(m.invalid_labels) == 0


@pytest.mark.parametrize("loss", [kd.losses.CrossEntropy(), kd.losses.DiceLoss(),
                                  kd.losses.OHEMCrossEntropy(min_kept=1)])
def test_losses_refuse_labels_outside_the_classes(loss):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 19\).*value:\W*33"):
        loss(Y, PRED)


def test_cross_entropy_on_valid_labels_matches_keras():
    y = np.array([0, 255], np.int32).reshape(1, 1, 2, 1)
    ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    assert float(kd.losses.CrossEntropy()(y, PRED)) == pytest.approx(float(ref(y, PRED)),
                                                                      rel=1e-6)


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1, 2, 3))
    return keras.Model(inputs, keras.layers.Conv2D(19, 1)(inputs))


def test_fit_fails_and_evaluate_is_not_perfect_under_xla():
    """Under jit_compile the assertion is dropped by XLA: the metric is NaN, the loss NaN."""
    images = np.zeros((1, 1, 2, 3), np.float32)
    model = _tiny_model()
    miou = kd.metrics.MeanIoU(19)
    model.compile(loss=kd.losses.CrossEntropy(), metrics=[miou], jit_compile=True)
    logs = model.evaluate(images, Y, verbose=0, return_dict=True)
    assert np.isnan(logs["mean_iou"]) and np.isnan(logs["loss"])
    assert float(miou.invalid_labels) == 1.0  # the one pixel labelled 33
    with pytest.raises(kd.callbacks.NonFiniteLossError):
        model.fit(images, Y, epochs=1, verbose=0, callbacks=[kd.callbacks.StopOnNaN()])


def test_fit_without_xla_raises_naming_the_value():
    images = np.zeros((1, 1, 2, 3), np.float32)
    model = _tiny_model()
    model.compile(optimizer="sgd", loss=kd.losses.CrossEntropy(),
                  metrics=[kd.metrics.MeanIoU(19)], jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"CrossEntropy.*value:\W*33"):
        model.fit(images, Y, epochs=1, verbose=0)


@pytest.mark.backends  # runs the PyTorch backend (make test-backends installs torch)
def test_torch_backend_raises_naming_the_value():
    out = run_python(r"""
        import json
        import numpy as np
        from keras_deeplab.training import losses, metrics
        y = np.array([0, 33], np.int32).reshape(1, 1, 2, 1)
        p = np.zeros((1, 1, 2, 19), np.float32)
        p[0, 0, 0, 0] = p[0, 0, 1, 1] = 5.0
        errors = []
        for fn in (lambda: metrics.MeanIoU(19).update_state(y, p),
                   lambda: losses.CrossEntropy()(y, p)):
            try:
                fn()
                errors.append(None)
            except ValueError as e:
                errors.append(str(e))
        print(json.dumps(errors))
    """, env={"KERAS_BACKEND": "torch"})
    assert all(e is not None and e.endswith(" 33.") and "[0, 19)" in e for e in out), out
