"""Evaluation: sliding window / TTA against whole-image references; the mIoU callback."""

import json
import math
import os
import tracemalloc
from fractions import Fraction

import keras
import numpy as np
import pytest

import keras_deeplab as kd
from keras_deeplab.inference import engine
from keras_deeplab.inference.engine import predict_probabilities

IGNORE = 255


def pointwise_model(num_classes=4, seed=0):
    """A per-pixel (1x1 conv) model: a window's prediction equals the whole image's."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 1, activation="relu")(x)
    outputs = keras.layers.Conv2D(num_classes, 1)(x)
    return keras.Model(inputs, outputs)


def _images(b=2, h=37, w=53, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, h, w, 3)).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_window_starts_match_hand_counted_positions():
    # Independent reference: positions counted by hand from the documented rule
    # (stride ceil(window * (1 - overlap)), last window aligned with the end).
    assert engine.window_starts(70, 32, 1 / 3) == [0, 22, 38]  # the 50x70 image
    assert engine.window_starts(50, 32, 1 / 3) == [0, 18]
    assert engine.window_starts(60, 30, 1 / 3) == [0, 20, 30]  # 30 * 2/3 is 20, not 21
    assert engine.window_starts(10, 6, 0.5) == [0, 3, 4]
    assert engine.window_starts(20, 30, 0.5) == [0]  # shorter than the window: one window
    assert engine.window_starts(64, 16, 0.0) == [0, 16, 32, 48]
    for length, window, overlap in [(100, 30, 1 / 3), (30, 30, 0.5), (101, 40, 0.3),
                                    (769, 512, 0.25), (2048, 769, 1 / 3)]:
        starts = engine.window_starts(length, window, overlap)
        size = min(window, length)
        covered = np.zeros(length, int)
        for s in starts:
            covered[s:s + size] += 1
        assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + size == length
        # exact rational stride: ceil(window * (1 - overlap)) without float round-off
        stride = math.ceil(window * (1 - Fraction(overlap).limit_denominator(1000)))
        steps = np.diff(starts)
        assert (steps[:-1] == stride).all() and ((0 < steps[-1:]) & (steps[-1:] <= stride)).all()


def test_sliding_window_equals_whole_image_for_pointwise_model():
    model = pointwise_model()
    images = _images()
    whole = predict_probabilities(model, images)
    np.testing.assert_allclose(whole, _softmax(model.predict(images, verbose=0)), atol=1e-6)
    for window, overlap in [(16, 1 / 3), ((20, 24), 0.5), (64, 0.0)]:
        sliding = predict_probabilities(model, images, sliding_window=window, overlap=overlap)
        np.testing.assert_allclose(sliding, whole, atol=1e-5)


def test_sliding_window_averages_overlapping_windows():
    """For a model with spatial context, check the average against a hand-made reference."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, None, 3)),
                              keras.layers.Conv2D(3, 3, padding="same")])
    images = _images(b=1, h=10, w=14)
    got = predict_probabilities(model, images, sliding_window=(6, 8), overlap=0.5)
    total = np.zeros((1, 10, 14, 3))
    count = np.zeros((1, 10, 14, 1))
    for y in (0, 3, 4):  # stride 3, last window aligned at 10 - 6
        for x in (0, 4, 6):
            p = _softmax(model.predict(images[:, y:y + 6, x:x + 8], verbose=0))
            total[:, y:y + 6, x:x + 8] += p
            count[:, y:y + 6, x:x + 8] += 1
    np.testing.assert_allclose(got, total / count, atol=1e-5)
    # The windows matter here: the whole-image prediction is different.
    assert np.abs(predict_probabilities(model, images) - got).max() > 1e-3


def test_multiscale_and_flip_average_probabilities():
    import tensorflow as tf

    model = pointwise_model()
    images = _images(b=1, h=20, w=30)
    got = predict_probabilities(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    ref = []
    for s in (0.5, 1.0, 1.5):
        size = (int(round(20 * s)), int(round(30 * s)))
        x = tf.image.resize(images, size, method="bilinear").numpy() if s != 1.0 else images
        for flip in (False, True):
            xi = x[:, :, ::-1] if flip else x
            p = _softmax(model.predict(np.ascontiguousarray(xi), verbose=0))
            p = p[:, :, ::-1] if flip else p
            if s != 1.0:
                p = tf.image.resize(np.ascontiguousarray(p), (20, 30)).numpy()
            ref.append(p)
    np.testing.assert_allclose(got, np.mean(ref, 0), atol=1e-5)
    # A per-pixel model is flip-equivariant: flip TTA alone changes nothing.
    np.testing.assert_allclose(predict_probabilities(model, images, flip=True),
                               predict_probabilities(model, images), atol=1e-6)


def _dataset(model, n=5, h=24, w=20, seed=3):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
    pred = model.predict(images, verbose=0).argmax(-1)
    masks = np.where(rng.random(pred.shape) < 0.7, pred, rng.integers(0, 4, pred.shape))
    masks[:, :3] = IGNORE
    return images, masks[..., None].astype(np.int32)


def test_evaluate_matches_numpy_and_keras_metric():
    model = pointwise_model()
    images, masks = _dataset(model)
    batches = [(images[i:i + 2], masks[i:i + 2]) for i in range(0, 5, 2)]
    results = kd.training.evaluate(model, batches, progress=False)
    pred = model.predict(images, verbose=0).argmax(-1)
    valid = masks[..., 0] != IGNORE
    cm = np.bincount(4 * masks[..., 0][valid] + pred[valid], minlength=16).reshape(4, 4)
    np.testing.assert_array_equal(results["confusion_matrix"], cm)
    metric = kd.metrics.MeanIoU(4)
    metric.update_state(masks, model.predict(images, verbose=0))
    np.testing.assert_allclose(results["mean_iou"], float(metric.result()), rtol=1e-6)
    np.testing.assert_allclose(results["pixel_accuracy"], np.trace(cm) / cm.sum(), rtol=1e-9)
    assert results["num_images"] == 5


def test_evaluate_errors():
    model = pointwise_model()
    images, masks = _dataset(model)
    with pytest.raises(ValueError, match="empty"):
        kd.training.evaluate(model, [], progress=False)
    with pytest.raises(ValueError, match="dataset has 6 classes but the model predicts 4"):
        kd.training.evaluate(model, [(images, masks)], num_classes=6, progress=False)
    bad = masks.copy()
    bad[0, 5, 5] = 9
    with pytest.raises(ValueError, match="neither a class id"):
        kd.training.evaluate(model, [(images, bad)], progress=False)


def test_evaluate_at_another_output_stride():
    # Independent reference: the same architecture built at OS8 from scratch, given the OS16
    # model's weights (dilation adds none) and run directly; scored with NumPy.
    model = kd.models.from_preset("deeplabv3plus_tiny", num_classes=4)
    images, masks = _dataset(pointwise_model(), n=2, h=48, w=40)
    reference = kd.models.from_preset("deeplabv3plus_tiny", num_classes=4, output_stride=8)
    reference.set_weights(model.get_weights())
    pred8 = keras.ops.convert_to_numpy(reference(images, training=False)).argmax(-1)
    pred16 = keras.ops.convert_to_numpy(model(images, training=False)).argmax(-1)
    assert (pred8 != pred16).any()  # the stride changes the labels, so the check can fail
    valid = masks[..., 0] != IGNORE
    cm8 = np.bincount(4 * masks[..., 0][valid] + pred8[valid], minlength=16).reshape(4, 4)
    via_arg = kd.training.evaluate(model, [(images, masks)], output_stride=8, progress=False)
    np.testing.assert_array_equal(via_arg["confusion_matrix"], cm8)
    assert model.output_stride == 16  # the user's model is left as it was


def test_empty_scores_are_nan():
    model = pointwise_model()
    images, masks = _dataset(model, n=1)
    results = kd.training.evaluate(model, [(images, np.full_like(masks, IGNORE))],
                                   progress=False)
    assert results["confusion_matrix"].sum() == 0
    assert np.isnan(results["mean_iou"]) and np.isnan(results["pixel_accuracy"])
    assert np.isnan(results["per_class_iou"]).all()
    assert "n/a" in kd.training.format_iou_table(results["per_class_iou"],
                                                 mean_iou=results["mean_iou"])


def test_callback_writes_logs_for_checkpoint_and_history(tmp_path, capsys):
    import tensorflow as tf

    model = pointwise_model()
    images, masks = _dataset(model, n=4)
    train = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)
    val = tf.data.Dataset.from_tensor_slices({"images": images,
                                              "segmentation_masks": masks}).batch(2)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy())
    names = ["road", "car", "sky", "person"]
    cb = kd.callbacks.EvaluateMeanIoU(val, every_n_epochs=2, sliding_window=16, flip=True,
                                      class_names=names)
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_miou",
                                           mode="max", save_best_only=True)
    history = model.fit(train, epochs=3, callbacks=[cb, ckpt], verbose=0)
    # evaluated after epoch 2 (every 2) and epoch 3 (the last)
    assert [e for e, _ in cb.history] == [1, 2]
    assert "val_miou" in history.history and len(history.history["val_miou"]) == 2
    final = kd.training.evaluate(model, val, sliding_window=16, flip=True, progress=False)
    assert history.history["val_miou"][-1] == pytest.approx(final["mean_iou"])
    for k, name in enumerate(names):
        got = history.history[f"val_iou_{name}"][-1]
        want = final["per_class_iou"][k]
        assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want)
    assert (tmp_path / "best.keras").exists()
    out = capsys.readouterr().out
    assert "person" in out and "mean IoU" in out


def test_callback_evaluates_the_model_inside_a_device_augmented_wrapper():
    # The wrapper has no output stride of its own: the callback must evaluate (and rebuild
    # at OS8) the segmentation model it wraps. Reference: evaluate() on that model afterwards.
    model = kd.models.from_preset("deeplabv3plus_tiny", num_classes=4)
    images, masks = _dataset(pointwise_model(), n=2, h=32, w=32)
    trainer = kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation(32))
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy())
    cb = kd.callbacks.EvaluateMeanIoU([(images, masks)], output_stride=8, verbose=0)
    trainer.fit(images, masks, batch_size=2, epochs=1, callbacks=[cb], verbose=0)
    want = kd.training.evaluate(model, [(images, masks)], output_stride=8, progress=False)
    np.testing.assert_array_equal(cb.history[-1][1]["confusion_matrix"],
                                  want["confusion_matrix"])


def test_stop_on_nan_names_the_step():
    images, masks = _dataset(pointwise_model(), n=8)
    images[5] = np.nan  # batch index 2 (batch size 2) of the first epoch
    # A linear model: a fused Conv2D + ReLU (oneDNN) may turn NaN into 0 and hide it.
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy())
    cb = kd.callbacks.StopOnNaN()
    with pytest.raises(kd.callbacks.NonFiniteLossError, match=r"epoch 1, step 3 .*global step 3"):
        model.fit(images, masks, batch_size=2, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    assert cb.failed_at == (0, 2, 3)


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_stop_on_nan_sees_nan_weights_when_the_loss_stays_finite(tmp_path, steps_per_execution):
    # A NaN image batch at step 3 makes the first conv's weights NaN; oneDNN's max pooling and
    # fused batch norm + ReLU turn the NaN activations into 0, so the loss can stay finite.
    # The batch-norm moving statistics are NaN from that step on: the run must stop there.
    keras.utils.set_random_seed(1)
    model = kd.models.DeepLabV3Plus(num_classes=3, backbone="resnet18",
                                    backbone_kwargs={"base_filters": 8}, aspp_filters=16,
                                    decoder_filters=16, low_level_filters=8)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy(),
                  steps_per_execution=steps_per_execution)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    images[4:6] = np.nan  # batch index 2: step 3
    masks = rng.integers(0, 3, (8, 32, 32, 1)).astype("int32")
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)
    where = "step 3 of the epoch" if steps_per_execution == 1 else "one of steps 3-4 of the epoch"
    with pytest.raises(kd.callbacks.NonFiniteLossError, match=rf"epoch 1, {where}"):
        kd.training.fit(model, train, 2, str(tmp_path / "run"), tensorboard=False, verbose=0,
                        backup_steps=2)
    assert kd.training.read_manifest(str(tmp_path / "run"))["status"] != "finished"


def test_tensorboard_masks_and_manifest(tmp_path):
    import tensorflow as tf

    model = pointwise_model()
    images, masks = _dataset(model, n=3)
    tb = kd.callbacks.TensorBoardMasks(str(tmp_path / "tb"), [(images, masks)], max_images=2)
    tb.set_model(model)
    panels = tb.panels()
    assert panels.shape == (2, 24, 60, 3) and panels.dtype == np.uint8
    pred = model.predict(images[:2], verbose=0).argmax(-1)
    voc_devkit = np.array([(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)], np.uint8)
    np.testing.assert_array_equal(panels[:, :, 40:], voc_devkit[pred])  # default: VOC colours
    tb.on_epoch_end(0)
    tb.on_train_end()
    events = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "tb") for f in fs]
    tags = {v.tag for e in events for ev in tf.compat.v1.train.summary_iterator(e)
            for v in ev.summary.value}
    assert "predictions" in tags

    run = tmp_path / "run1"
    writer = kd.callbacks.ManifestWriter(str(run), config={"lr": 0.01}, dataset={"name": "x"})
    writer.set_model(model)
    writer.on_train_begin()
    writer.on_epoch_end(0, {"loss": 1.0, "val_miou": 0.3})
    writer.on_epoch_end(1, {"loss": 0.5, "val_miou": 0.2})
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"] == {"lr": 0.01} and manifest["dataset"] == {"name": "x"}
    assert manifest["metrics"]["best_val_miou"] == 0.3
    assert manifest["metrics"]["best_val_miou_epoch"] == 1
    assert manifest["metrics"]["last"]["val_miou"] == 0.2 and manifest["metrics"]["epoch"] == 2
    assert len(manifest["git"]["commit"]) == 40


def test_callback_rejects_one_shot_iterators():
    with pytest.raises(TypeError, match="re-iterable"):
        kd.callbacks.EvaluateMeanIoU(iter([(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)))]))
    kd.callbacks.EvaluateMeanIoU([(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)))])


class _NumpyRunner:
    """A NumPy 'model' (all its allocations are seen by tracemalloc): per-pixel logits plus a
    term from the mean colour of its input, so a window's logits differ from the image's."""

    num_classes = 19
    fixed_input_size = None
    kind = "numpy"

    def __init__(self):
        self.weights = np.random.default_rng(0).standard_normal((3, 19)).astype(np.float32) / 64

    def __call__(self, x):
        logits = np.asarray(x, np.float32) @ self.weights
        logits += np.asarray(x, np.float32).mean(axis=(1, 2), keepdims=True) @ self.weights
        return logits


@pytest.mark.parametrize("settings, maps", [
    # the runner's logits for one image + their probabilities (+ softmax blocks): 2.09
    (dict(), 2.4),
    # one image's window sum + one window's logits (0.19 map) + window count: 1.38
    (dict(sliding_window=48), 1.6),
    # summed in place: the sum, one view's logits and probabilities, the mirrored input: 3.25
    (dict(flip=True), 3.5),
])
def test_evaluate_memory_is_a_few_probability_maps(monkeypatch, settings, maps):
    """Memory regression guard (issue 16), load-independent: the NumPy peak of evaluating a
    batch of 3 images (tracemalloc) stays within a few probability maps of ONE image, whatever
    the batch: no whole-map float64 softmax, no batch-wide accumulator, no list of views, no
    float copy for the metric (the engine before issue 16's fix: 10.0 / 6.3 / 13.5 maps)."""
    # the softmax block must be small against the map for the test to see whole-map copies
    monkeypatch.setattr(engine, "_SOFTMAX_BLOCK", 4096)
    h, w, classes = 96, 128, 19
    one_map = h * w * classes * 4  # float32 probabilities of one image
    images = _images(b=3, h=h, w=w)
    masks = np.random.default_rng(1).integers(0, classes, (3, h, w, 1)).astype(np.int32)
    kwargs = dict(batch_size=1, progress=False, **settings)
    reference = kd.training.evaluate(_NumpyRunner(), [(images, masks)], **kwargs)  # warm-up
    tracemalloc.start()
    try:
        results = kd.training.evaluate(_NumpyRunner(), [(images, masks)], **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(results["confusion_matrix"], reference["confusion_matrix"])
    assert results["confusion_matrix"].sum() == 3 * h * w
    assert peak <= maps * one_map, (
        f"evaluate peaked at {peak / one_map:.2f} probability maps of one image "
        f"({peak / 2**20:.1f} MiB), expected <= {maps}")
