"""DeepLab v2 / v3 / v3+ and baselines: shapes at any size, save/load, presets, OS change."""

import keras
import numpy as np
import pytest

import keras_deeplab as kd

TINY = {"backbone": "resnet18", "backbone_kwargs": {"base_filters": 8}}

MODELS = {
    "v3plus": lambda: kd.models.DeepLabV3Plus(num_classes=5, aspp_filters=16, decoder_filters=16, low_level_filters=8, **TINY),
    "v3plus_separable_mobilenet": lambda: kd.models.DeepLabV3Plus(
        num_classes=5, backbone="mobilenetv2", backbone_kwargs={"alpha": 0.35}, separable=True,
        aspp_filters=16, decoder_filters=16,
    ),
    "v3_multigrid": lambda: kd.models.DeepLabV3(num_classes=4, multi_grid=(1, 2), output_stride=8, aspp_filters=16, **TINY),
    "v3_aux": lambda: kd.models.DeepLabV3(num_classes=4, aux_head=True, aspp_filters=16, **TINY),
    "v2_resnet": lambda: kd.models.DeepLabV2(num_classes=3, **TINY),
    "v2_largefov": lambda: kd.models.DeepLabV2(num_classes=3, backbone="vgg16", aspp_rates=(12,), fc_filters=16),
    "fcn": lambda: kd.models.FCN(num_classes=3, output_stride=8, **TINY),
    "unet": lambda: kd.models.UNet(num_classes=3, filters=(8, 16, 32)),
    "pixel": lambda: kd.models.PixelClassifier(num_classes=3, hidden=(8,)),
    "v3plus_backbone_instance": lambda: kd.models.DeepLabV3Plus(
        num_classes=2, backbone=kd.backbones.ResNetBackbone(depth=18, base_filters=8, output_stride=8),
        aspp_filters=8, decoder_filters=8,
    ),
}


def _logits(outputs):
    return outputs["logits"] if isinstance(outputs, dict) else outputs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_round_trip_and_keras_file(name, tmp_path, rng):
    model = MODELS[name]()
    x = rng.uniform(0, 255, size=(2, 45, 59, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert _logits(y).shape == (2, 45, 59, model.num_classes)
    assert _logits(y).dtype == np.float32
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    out = loaded.predict(x, verbose=0)
    if isinstance(y, dict):
        assert set(out) == {"logits", "aux_logits"}
        for key in y:
            np.testing.assert_array_equal(out[key], y[key])
    else:
        np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("os", [8, 16, 32])
@pytest.mark.parametrize("size", [(65, 97), (33, 33)])
def test_logits_at_input_resolution_for_odd_sizes(os, size, rng):
    model = kd.models.DeepLabV3Plus(num_classes=3, output_stride=os, aspp_filters=8, decoder_filters=8, **TINY)
    x = rng.uniform(0, 255, size=(1, *size, 3)).astype("float32")
    assert model(x).shape == (1, *size, 3)
    assert model.get_layer("aspp").rates == kd.models.default_aspp_rates(os)


def test_513_by_513_works_where_keras_hub_needs_divisible_sizes(rng):
    model = kd.models.from_preset("deeplabv3plus_tiny", num_classes=4)
    x = rng.uniform(0, 255, size=(1, 513, 513, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (1, 513, 513, 4)


def test_unknown_size_under_tf_function(rng):
    import tensorflow as tf

    model = MODELS["v3plus"]()
    fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((None, None, None, 3), tf.float32)
    )
    x = rng.uniform(0, 255, size=(1, 37, 50, 3)).astype("float32")
    np.testing.assert_allclose(fn(tf.constant(x)), model(x, training=False), atol=1e-5)


def test_with_output_stride_keeps_weights_and_doubles_rates(rng):
    model = kd.models.DeepLabV3(num_classes=3, output_stride=16, multi_grid=(1, 2), aspp_filters=8, **TINY)
    os8 = kd.models.with_output_stride(model, 8)
    assert os8.output_stride == 8
    assert os8.get_layer("aspp").rates == (12, 24, 36)
    assert [w.shape for w in os8.weights] == [w.shape for w in model.weights]
    for a, b in zip(os8.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    rates5 = [layer.dilation_rate[0] for layer in os8.backbone.layers if layer.name.startswith("conv5_") and layer.name.endswith("_1_conv")]
    assert rates5 == [4, 8]
    x = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    # Independent reference: the OS8 model built directly with the doubled rates and given
    # the OS16 weights computes exactly what with_output_stride returns...
    direct = kd.models.DeepLabV3(num_classes=3, output_stride=8, multi_grid=(1, 2),
                                 aspp_rates=(12, 24, 36), aspp_filters=8, **TINY)
    direct.set_weights(model.get_weights())
    np.testing.assert_allclose(os8.predict(x, verbose=0), direct.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    # ... and the denser computation changes the logits (same weights, other sampling).
    assert np.abs(os8.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3


def test_with_output_stride_scales_deeplab_v2_rates_as_documented():
    # DeepLabV2's rates are explicit (default (6, 12, 18, 24) at OS8): scaled like any other.
    v2 = kd.models.DeepLabV2(num_classes=3, **TINY)
    assert v2.get_layer("aspp_v2").rates == (6, 12, 18, 24)
    os16 = kd.models.with_output_stride(v2, 16)
    assert os16.output_stride == 16 and os16.get_layer("aspp_v2").rates == (3, 6, 9, 12)
    back = kd.models.with_output_stride(os16, 8)
    assert back.get_layer("aspp_v2").rates == (6, 12, 18, 24)
    with pytest.raises(ValueError, match="no output stride"):
        kd.models.with_output_stride(kd.models.PixelClassifier(3, hidden=(4,)), 8)


def test_backbone_instance_arguments_are_honoured_or_rejected():
    backbone = kd.backbones.ResNetBackbone(depth=18, base_filters=8, output_stride=16,
                                           multi_grid=(1, 2))
    with pytest.raises(ValueError, match="multi_grid=\\(1, 4\\) is ignored"):
        kd.models.DeepLabV3(num_classes=3, backbone=backbone, multi_grid=(1, 4), aspp_filters=8)
    with pytest.raises(ValueError, match="backbone_kwargs"):
        kd.models.DeepLabV3Plus(num_classes=3, backbone=backbone, backbone_kwargs={"alpha": 1})
    with pytest.raises(TypeError, match="Backbone"):
        kd.models.FCN(num_classes=3, backbone=keras.Sequential([keras.Input((8, 8, 3))]))
    # The instance's own multi_grid, restated, is what the config records and what runs.
    model = kd.models.DeepLabV3(num_classes=3, backbone=backbone, multi_grid=(1, 2), aspp_filters=8)
    assert model.get_config()["multi_grid"] == (1, 2)
    assert model.get_config()["backbone"]["config"]["multi_grid"] == (1, 2)
    rates5 = [layer.dilation_rate[0] for layer in model.backbone.layers
              if layer.name.startswith("conv5_") and layer.name.endswith("_1_conv")]
    assert rates5 == [2, 4]  # OS16 rate 2 times the multi-grid (1, 2)
    clone = kd.models.DeepLabV3.from_config(model.get_config())
    assert clone.backbone.multi_grid == (1, 2)


def test_presets_build_the_described_architectures():
    assert "deeplabv3plus_resnet101_cityscapes" in kd.models.list_presets()
    model = kd.models.from_preset("deeplabv3plus_resnet101_cityscapes", backbone_kwargs={"base_filters": 8})
    config = model.get_config()
    assert (config["num_classes"], config["backbone"], config["output_stride"]) == (19, "resnet101", 16)
    assert len([layer for layer in model.backbone.layers if layer.name.endswith("_3_conv") and layer.name.startswith("conv4")]) == 23
    largefov = kd.models.from_preset("deeplab_largefov_vgg16_voc", fc_filters=8)
    assert largefov.get_layer("aspp_v2").rates == (12,)
    assert largefov.get_layer("aspp_v2").head == "fc"
    with pytest.raises(ValueError, match="Unknown preset"):
        kd.models.from_preset("deeplabv9")


def test_models_reject_bad_arguments(rng):
    with pytest.raises(ValueError, match="output_stride must be one of"):
        kd.models.DeepLabV3Plus(num_classes=3, output_stride=12, **TINY)
    with pytest.raises(ValueError, match="Unknown backbone"):
        kd.models.DeepLabV3(num_classes=3, backbone="resnext50")
    backbone = kd.backbones.ResNetBackbone(depth=18, base_filters=8, output_stride=8)
    with pytest.raises(ValueError, match="disagrees"):
        kd.models.DeepLabV3(num_classes=3, backbone=backbone, output_stride=16)
    model = MODELS["v3plus"]()
    # Keras' own input check fires first for the functional model and names the shape.
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, None, 3\)"):
        model(np.zeros((1, 32, 32, 4), "float32"))


def test_mixed_bfloat16_keeps_float32_logits_and_its_policy_on_reload(rng, tmp_path):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = MODELS["v3plus"]()
        x = rng.uniform(0, 255, size=(1, 32, 32, 3)).astype("float32")
        y = model(x)
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert model.get_layer("aspp").compute_dtype == "bfloat16"
        model.save(str(tmp_path / "bf16.keras"))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    config = model.get_config()
    assert config["dtype"]["config"]["name"] == "mixed_bfloat16"
    # Rebuilt under the float32 global policy, from the config and from the .keras file.
    rebuilt = kd.models.DeepLabV3Plus.from_config(config)
    rebuilt.set_weights(model.get_weights())
    for clone in (rebuilt, keras.saving.load_model(str(tmp_path / "bf16.keras"))):
        assert clone.dtype_policy.name == "mixed_bfloat16"
        assert clone.get_layer("aspp").compute_dtype == "bfloat16"
        assert clone.backbone.get_layer("conv1_conv").compute_dtype == "bfloat16"
        np.testing.assert_array_equal(clone(x), y)
    assert keras.config.dtype_policy().name == "float32"  # the scope restored the global


def test_trains_on_a_tiny_problem(rng):
    """A few steps of SGD lower the loss: gradients flow through every custom layer."""
    model = MODELS["v3plus"]()
    x = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    y = (x[..., :1] > 127).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=8, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
