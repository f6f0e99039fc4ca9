"""MirroredStrategy over 2 logical CPUs: fit + evaluate + mIoU equal single-device training."""

import keras
import numpy as np
import pytest
from test_training_helpers import run_python

import keras_deeplab as kd

MIRRORED_SCRIPT = r"""
import json
import os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_deeplab as kd

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
# Replica 0 gets dark images, replica 1 bright ones: per-replica BN statistics differ a lot.
images[[0, 1, 4, 5]] *= 0.2
labels = (images.mean(-1) > 90).astype(np.int32) + (images[..., 0] > 150)
labels = labels[..., None].astype(np.int32)
eval_labels = labels.copy()
eval_labels[:2, :6] = 255  # uneven ignore pixels across replicas for the metric check


def build():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Conv2D(3, 1)(x)
    return keras.Model(inputs, outputs)


initial = build().get_weights()


def train(strategy, sync):
    with strategy.scope():
        model = build()
        model.set_weights(initial)
        if sync:
            assert kd.training.sync_batchnorm(model) == 1
        model.compile(optimizer=kd.training.poly_sgd(0.05, total_steps=8, weight_decay=1e-3),
                      loss=kd.losses.CrossEntropy(),
                      metrics=[kd.metrics.MeanIoU(3), kd.metrics.PixelAccuracy(3)])
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    hist = model.fit(ds, epochs=4, verbose=0)
    ev = model.evaluate(tf.data.Dataset.from_tensor_slices((images, eval_labels)).batch(4),
                        return_dict=True, verbose=0)
    full = kd.training.evaluate(model, [(images, eval_labels)], progress=False)
    return model, hist.history["loss"], ev, full


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
default = tf.distribute.get_strategy()
single, loss_1, ev_1, full_1 = train(default, sync=False)
synced, loss_2, ev_2, full_2 = train(mirrored, sync=True)
plain, loss_3, ev_3, full_3 = train(mirrored, sync=False)


def max_diff(a, b):
    # Largest weight difference relative to each tensor's scale (BN moving variances of the
    # stem reach thousands).
    return max(float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(x))))
               for x, y in zip(a.get_weights(), b.get_weights()))


# Metric under the strategy on identical weights: must equal the single-device value.
with mirrored.scope():
    clone = build()
    clone.set_weights(single.get_weights())
    clone.compile(loss=kd.losses.CrossEntropy(), metrics=[kd.metrics.MeanIoU(3)])
ev_same = clone.evaluate(tf.data.Dataset.from_tensor_slices((images, eval_labels)).batch(4),
                         return_dict=True, verbose=0)

# The same with the tiny DeepLabv3+ (dropout off so both runs are deterministic), on 64x64
# images: with 16x16 ones the last stage is 1x1 and BN over 4 values is so ill-conditioned
# that float rounding (per-replica partial sums) alone moves the weights by 1e-2.
images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)
labels = np.repeat(np.repeat(labels, 4, axis=1), 4, axis=2)
eval_labels = np.repeat(np.repeat(eval_labels, 4, axis=1), 4, axis=2)


def build_deeplab():
    keras.utils.set_random_seed(2)
    return kd.models.DeepLabV3Plus(num_classes=3, backbone="resnet18",
                                   backbone_kwargs={"base_filters": 8}, aspp_filters=16,
                                   decoder_filters=16, low_level_filters=8, aspp_dropout=0.0)


# Under a multi-replica strategy the library's BatchNormalization is synchronized and runs
# Keras' own computation (the fused kernel cannot all-reduce statistics); the single-device
# reference uses that computation too (KERAS_DEEPLAB_FUSED_BN=0), so the two runs differ only
# in the replica split. (Fused vs Keras' computation: tests/test_normalization.py.)
os.environ["KERAS_DEEPLAB_FUSED_BN"] = "0"
deeplab_initial = build_deeplab().get_weights()
deeplab_runs = []
deeplab_synced = []
for strategy in (default, mirrored):
    with strategy.scope():
        net = build_deeplab()  # no sync_batchnorm call: a multi-replica scope syncs BN itself
        net.set_weights(deeplab_initial)
        deeplab_synced.append([bn.synchronized for bn in kd.training.distribute.batch_norm_layers(net)])
        net.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=4),
                    loss=kd.losses.CrossEntropy(), metrics=[kd.metrics.MeanIoU(3)])
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    loss = net.fit(ds, epochs=2, verbose=0).history["loss"]
    ev = net.evaluate(tf.data.Dataset.from_tensor_slices((images, eval_labels)).batch(4),
                      return_dict=True, verbose=0)
    deeplab_runs.append((net, loss, ev))

# The float-rounding noise floor of this short, ill-conditioned run: the same single-device
# training with the other (mathematically equal, ~2e-6 per step) formulation of the dilated
# conv gradient moves the weights by as much as splitting the batch over replicas does.
os.environ["KERAS_DEEPLAB_DILATED_GRADIENT"] = "space_to_batch"
net = build_deeplab()
net.set_weights(deeplab_initial)
net.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=4), loss=kd.losses.CrossEntropy())
net.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(4), epochs=2, verbose=0)
del os.environ["KERAS_DEEPLAB_DILATED_GRADIENT"]
del os.environ["KERAS_DEEPLAB_FUSED_BN"]

print(json.dumps({
    "deeplab_noise": max_diff(deeplab_runs[0][0], net),
    "deeplab_loss": [deeplab_runs[0][1], deeplab_runs[1][1]],
    "deeplab_miou": [deeplab_runs[0][2]["mean_iou"], deeplab_runs[1][2]["mean_iou"]],
    "deeplab_diff": max_diff(deeplab_runs[0][0], deeplab_runs[1][0]),
    "deeplab_synced": deeplab_synced,
    "replicas": mirrored.num_replicas_in_sync,
    "loss_single": loss_1, "loss_sync": loss_2, "loss_plain": loss_3,
    "diff_sync": max_diff(single, synced), "diff_plain": max_diff(single, plain),
    "ev_single": ev_1, "ev_sync": ev_2, "ev_same": ev_same,
    "full_single": full_1["mean_iou"], "full_sync": full_2["mean_iou"],
}))
"""


@pytest.mark.large
def test_mirrored_strategy_matches_single_device():
    res = run_python(MIRRORED_SCRIPT, timeout=400)
    assert res["replicas"] == 2
    # Synchronized BN: 4 epochs under MirroredStrategy give the single-device weights.
    np.testing.assert_allclose(res["loss_sync"], res["loss_single"], rtol=1e-4)
    assert res["diff_sync"] < 1e-4, res
    # Plain BN normalizes each replica with its own (very different) statistics: it drifts.
    assert res["diff_plain"] > 100 * max(res["diff_sync"], 1e-6), res
    # Confusion-matrix metrics are reduced across replicas: identical weights, identical mIoU.
    assert res["ev_same"]["mean_iou"] == pytest.approx(res["ev_single"]["mean_iou"], abs=1e-6)
    assert res["ev_sync"]["mean_iou"] == pytest.approx(res["ev_single"]["mean_iou"], abs=1e-3)
    assert res["full_sync"] == pytest.approx(res["full_single"], abs=1e-3)
    assert res["ev_single"]["mean_iou"] == pytest.approx(res["full_single"], abs=1e-6)
    # keras_deeplab's tiny DeepLabv3+ built without sync_batchnorm(): plain BN on one device,
    # synchronized BN (by default) under the 2-replica strategy.
    single_flags, mirrored_flags = res["deeplab_synced"]
    assert len(single_flags) > 10 and not any(single_flags) and all(mirrored_flags), res
    # ... and so the same losses, weights and mIoU on 2 replicas.
    np.testing.assert_allclose(res["deeplab_loss"][1], res["deeplab_loss"][0], rtol=1e-3)
    # Within float noise: at most 3x the weight change that swapping the gradient's
    # formulation alone causes on one device (measured in the same script), or 1e-3.
    assert res["deeplab_diff"] < max(1e-3, 3 * res["deeplab_noise"]), res
    assert res["deeplab_miou"][1] == pytest.approx(res["deeplab_miou"][0], abs=1e-3)


def test_get_strategy_and_checks():
    import tensorflow as tf

    assert kd.training.get_strategy("default") is tf.distribute.get_strategy()
    assert kd.training.num_replicas(kd.training.get_strategy("auto")) == 1
    with pytest.raises(ValueError, match="Unknown strategy"):
        kd.training.get_strategy("horovod")
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1),
                              keras.layers.BatchNormalization()])
    with pytest.warns(UserWarning, match="only 2 image"):
        assert kd.training.check_per_replica_batch(2, model=model) == 2
    with pytest.raises(ValueError, match="smaller than the number of replicas"):
        kd.training.check_per_replica_batch(0)
    assert kd.training.sync_batchnorm(model) == 1
    assert model.layers[-1].get_config()["synchronized"] is True
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert restored.layers[-1].synchronized is True


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_logits_and_loss_float32(precision):
    previous = kd.training.set_precision(precision)
    try:
        model = kd.models.from_preset("deeplabv3plus_tiny", num_classes=3)
        compute = precision.split("_")[1]
        assert any(layer.compute_dtype == compute for layer in model.layers)
        images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        labels = np.random.default_rng(1).integers(0, 3, (2, 32, 32, 1)).astype("int32")
        logits = model(images, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        loss = kd.losses.CrossEntropy()(labels, logits)
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        model.compile(optimizer=kd.training.poly_sgd(0.01, 10), loss=kd.losses.CrossEntropy(),
                      metrics=[kd.metrics.MeanIoU(3)])
        history = model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        if precision == "mixed_float16":  # Keras adds dynamic loss scaling around our SGD
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert isinstance(model.optimizer.inner_optimizer, kd.training.KernelDecaySGD)
    finally:
        kd.training.set_precision(previous)
    with pytest.raises(ValueError, match="Unknown precision"):
        kd.training.set_precision("float8")


DEVICE_AUGMENT_SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_deeplab as kd

AUGMENT = {"max_rotation": 10, "brightness": 0.2, "saturation": 0.3, "blur_prob": 0.5}


def train(strategy, augment_on):
    keras.utils.set_random_seed(3)
    ds = kd.data.synthetic("train", num_images=16, image_size=32, batch_size=8, crop_size=24,
                           output="tuple", augment_on=augment_on, augment_seed=5,
                           augment=AUGMENT)
    with strategy.scope():
        model = kd.models.PixelClassifier(num_classes=6)
        trainer = model
        if augment_on == "device":
            trainer = kd.training.DeviceAugmentedModel(
                model, kd.data.SegmentationAugmentation(24, AUGMENT))
        trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy())
    hist = trainer.fit(ds, epochs=2, verbose=0, shuffle=False)
    return hist.history["loss"], model.get_weights()


def diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": mirrored.num_replicas_in_sync}
for name, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
    loss_data, w_data = train(strategy, "data")
    loss_device, w_device = train(strategy, "device")
    out[name] = {"loss_data": loss_data, "loss_device": loss_device,
                 "diff": diff(w_data, w_device)}
print(json.dumps(out))
"""


@pytest.mark.large
def test_device_augmentation_trains_like_tf_data_augmentation():
    # The same seeds give the same random numbers to both paths, and the crops are a pure
    # function of them: augmenting in the train step (each replica its half of the batch)
    # trains exactly like augmenting in tf.data, on one device and on 2 replicas.
    res = run_python(DEVICE_AUGMENT_SCRIPT, timeout=400)
    assert res["replicas"] == 2
    for name in ("single", "mirrored"):
        np.testing.assert_allclose(res[name]["loss_device"], res[name]["loss_data"], rtol=1e-5)
        assert res[name]["diff"] < 1e-5, res


SYNC_DEFAULT_SCRIPT = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_deeplab as kd
from keras_deeplab.training.distribute import batch_norm_layers


def flags(model):
    return [bn.synchronized for bn in batch_norm_layers(model)]


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": mirrored.num_replicas_in_sync}
with tf.distribute.get_strategy().scope():
    out["single"] = flags(kd.models.from_preset("deeplabv3plus_tiny"))
with mirrored.scope():
    model = kd.models.from_preset("deeplabv3plus_tiny")
    out["mirrored"] = flags(model)
    out["backbone"] = flags(kd.backbones.MobileNetV2Backbone(alpha=0.35))
    out["unet"] = flags(kd.models.UNet(3, filters=(4, 8)))
    kd.training.sync_batchnorm(model, False)
    out["opt_out"] = flags(model)
out["reloaded"] = flags(kd.models.DeepLabV3Plus.from_config(
    kd.models.from_preset("deeplabv3plus_tiny").get_config()))
print(json.dumps(out))
"""


def test_batch_norm_is_synchronized_when_built_under_a_multi_replica_strategy():
    # A user who builds under MirroredStrategy and never calls sync_batchnorm gets
    # synchronized BN; on one replica BN stays plain; sync_batchnorm(model, False) opts out.
    res = run_python(SYNC_DEFAULT_SCRIPT, timeout=300)
    assert res["replicas"] == 2
    assert len(res["mirrored"]) > 10 and all(res["mirrored"])
    assert res["backbone"] and all(res["backbone"]) and res["unet"] and all(res["unet"])
    assert not any(res["single"]) and not any(res["opt_out"]) and not any(res["reloaded"])
