"""Dilated backbones: keras.applications weights load exactly, DeepLab dilation rules."""

import keras
import numpy as np
import pytest

import keras_deeplab as kd
from keras_deeplab.backbones import MobileNetV2Backbone, ResNetBackbone, VGG16Backbone


def _trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _save_app_weights(tmp_path, app, **kwargs):
    ref = app(include_top=False, weights=None, input_shape=(None, None, 3), **kwargs)
    # Non-trivial weights everywhere, BN statistics included, so a missed layer shows.
    rng = np.random.default_rng(1)
    for layer in ref.layers:
        ws = layer.get_weights()
        if ws:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = ws[0].shape[0]
                ws = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)]
            else:
                ws = [w + rng.normal(0, 0.01, w.shape) for w in ws]
            layer.set_weights([w.astype("float32") for w in ws])
    path = str(tmp_path / f"{ref.name}.weights.h5")
    ref.save_weights(path)
    return ref, path


def test_resnet50_features_equal_keras_applications(tmp_path, rng):
    ref, path = _save_app_weights(tmp_path, keras.applications.ResNet50)
    ours = kd.backbones.get_backbone("resnet50", output_stride=32, weights=path)
    assert _trainable_count(ours) == _trainable_count(ref)
    x = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    feats = ours(x)
    pre = keras.applications.resnet.preprocess_input(x.copy())
    for key, layer_name in [("C2", "conv2_block3_out"), ("C3", "conv3_block4_out"),
                            ("C4", "conv4_block6_out"), ("C5", "conv5_block3_out")]:
        want = np.asarray(keras.Model(ref.input, ref.get_layer(layer_name).output)(pre))
        # float32 round-off of 53 layers relative to the feature scale (up to ~130 here): our
        # fused batch norm rounds differently from Keras' layer (<= 9e-7 of the scale measured)
        np.testing.assert_allclose(feats[key], want, atol=1e-5 * np.abs(want).max(), rtol=1e-5)


def test_vgg16_features_equal_keras_applications(tmp_path, rng):
    ref, path = _save_app_weights(tmp_path, keras.applications.VGG16)
    ours = kd.backbones.get_backbone("vgg16", output_stride=32, weights=path)
    x = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    pre = keras.applications.vgg16.preprocess_input(x.copy())
    feats = ours(x)
    for key, layer_name in [("C2", "block2_pool"), ("C3", "block3_pool"), ("C4", "block4_pool")]:
        tap = keras.Model(ref.input, ref.get_layer(layer_name).output)
        np.testing.assert_allclose(feats[key], tap(pre), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(feats["C5"], ref(pre), atol=1e-4, rtol=1e-5)
    assert _trainable_count(ours) == _trainable_count(ref)


def test_mobilenetv2_features_equal_keras_applications(tmp_path, rng):
    ref, path = _save_app_weights(tmp_path, keras.applications.MobileNetV2)
    ours = kd.backbones.get_backbone("mobilenetv2", output_stride=32, weights=path)
    x = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    pre = keras.applications.mobilenet_v2.preprocess_input(x.copy())
    feats = ours(x)
    for key, layer_name in [("C2", "block_2_add"), ("C3", "block_5_add"), ("C4", "block_12_add"),
                            ("C5", "block_16_project_BN")]:
        tap = keras.Model(ref.input, ref.get_layer(layer_name).output)
        np.testing.assert_allclose(feats[key], tap(pre), atol=1e-4, rtol=1e-4)
    # Everything but the classifier's 1x1 Conv_1 (+ its BN) is in the backbone.
    conv1 = sum(np.prod(w.shape) for n in ("Conv_1", "Conv_1_bn") for w in ref.get_layer(n).trainable_weights)
    assert _trainable_count(ours) == _trainable_count(ref) - conv1


@pytest.mark.parametrize(
    "depth,app", [(101, keras.applications.ResNet101), pytest.param(152, keras.applications.ResNet152, marks=pytest.mark.large)]
)
def test_resnet_trainable_parameters_equal_keras_applications(depth, app):
    ours = ResNetBackbone(depth=depth, output_stride=8, multi_grid=(1, 2, 4))
    ref = app(include_top=False, weights=None)
    assert _trainable_count(ours) == _trainable_count(ref)


def _rates(backbone, stage):
    return [
        layer.dilation_rate[0]
        for layer in backbone.layers
        if layer.name.startswith(f"conv{stage}_") and layer.name.endswith("_2_conv")
    ]


def _strides(backbone, stage):
    return backbone.get_layer(f"conv{stage}_block1_1_conv").strides[0]


@pytest.mark.parametrize(
    "os,mg,rates4,rates5,strides",
    [
        (32, None, [1] * 6, [1, 1, 1], (2, 2)),
        (16, None, [1] * 6, [2, 2, 2], (2, 1)),
        (16, (1, 2, 4), [1] * 6, [2, 4, 8], (2, 1)),
        (8, None, [2] * 6, [4, 4, 4], (1, 1)),
        (8, (1, 2, 1), [2] * 6, [4, 8, 4], (1, 1)),
    ],
)
def test_resnet_dilation_follows_deeplab_rules(os, mg, rates4, rates5, strides):
    backbone = ResNetBackbone(depth=50, base_filters=8, output_stride=os, multi_grid=mg)
    assert _rates(backbone, 4) == rates4
    assert _rates(backbone, 5) == rates5
    assert (_strides(backbone, 4), _strides(backbone, 5)) == strides
    assert _rates(backbone, 3) == [1] * 4


def test_mobilenet_and_vgg_dilation():
    mb = MobileNetV2Backbone(output_stride=8)
    assert mb.get_layer("block_6_depthwise").strides == (1, 1)
    assert mb.get_layer("block_6_depthwise").dilation_rate == (1, 1)
    assert mb.get_layer("block_7_depthwise").dilation_rate == (2, 2)
    assert mb.get_layer("block_13_depthwise").dilation_rate == (2, 2)
    assert mb.get_layer("block_16_depthwise").dilation_rate == (4, 4)
    vgg = VGG16Backbone(output_stride=8)
    assert vgg.get_layer("block4_pool").strides == (1, 1)
    assert vgg.get_layer("block5_conv1").dilation_rate == (2, 2)
    assert vgg.get_layer("block4_conv1").dilation_rate == (1, 1)


@pytest.mark.parametrize("os", [8, 16, 32])
@pytest.mark.parametrize("size", [(65, 97), (64, 64)])
def test_feature_shapes_at_output_strides(os, size, rng):
    x = rng.uniform(0, 255, size=(1, *size, 3)).astype("float32")
    for backbone in (
        ResNetBackbone(depth=18, base_filters=8, output_stride=os),
        MobileNetV2Backbone(alpha=0.35, output_stride=os),
    ):
        feats = backbone(x)
        extra = ["C2_depthwise"] if isinstance(backbone, MobileNetV2Backbone) else []
        assert sorted(feats) == sorted(["C2", "C3", "C4", "C5", *extra])
        high = feats["C5"]
        assert tuple(high.shape[1:3]) == (-(-size[0] // os), -(-size[1] // os))
        low = feats["C2"]
        assert tuple(low.shape[1:3]) == (-(-size[0] // 4), -(-size[1] // 4))
        # feature_strides states the measured size ratio of every key ("same" padding rounds up)
        nominal = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
        assert backbone.feature_strides == {k: min(v, os) for k, v in nominal.items()}
        for key, stride in backbone.feature_strides.items():
            assert tuple(feats[key].shape[1:3]) == (-(-size[0] // stride), -(-size[1] // stride))


def test_custom_stage_blocks_resnet156():
    backbone = ResNetBackbone(stage_blocks=(3, 8, 36, 4), base_filters=8, multi_grid=(1, 2, 4, 8), output_stride=16)
    assert _rates(backbone, 5) == [2, 4, 8, 16]
    assert len(_rates(backbone, 4)) == 36
    assert backbone.keras_application is None


def test_bad_arguments_say_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone 'resnet99'"):
        kd.backbones.get_backbone("resnet99")
    with pytest.raises(ValueError, match="output_stride must be one of"):
        kd.backbones.get_backbone("resnet18", output_stride=4)
    with pytest.raises(ValueError, match="one rate per unit"):
        ResNetBackbone(depth=50, multi_grid=(1, 2))
    with pytest.raises(ValueError, match="no keras.applications"):
        kd.backbones.get_backbone("resnet18", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kd.backbones.get_backbone("resnet50", weights=str(tmp_path / "missing.weights.h5"))


def test_weights_file_of_another_model_is_rejected(tmp_path):
    _, path = _save_app_weights(tmp_path, keras.applications.MobileNetV2, alpha=0.35)
    with pytest.raises(ValueError, match="Could not load .* as keras.applications.MobileNetV2"):
        kd.backbones.get_backbone("mobilenetv2", weights=path)  # alpha 1.0 expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResNetBackbone(depth=18, base_filters=8, output_stride=8),
        lambda: ResNetBackbone(stage_blocks=(1, 1, 2, 2), base_filters=8, multi_grid=(1, 2), output_stride=16),
        lambda: MobileNetV2Backbone(alpha=0.35, output_stride=16),
        lambda: VGG16Backbone(output_stride=8),
    ],
)
def test_backbone_config_round_trip_and_keras_file(make, tmp_path, rng):
    backbone = make()
    clone = type(backbone).from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    x = rng.uniform(0, 255, size=(1, 40, 40, 3)).astype("float32")
    path = str(tmp_path / "b.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    for key, value in backbone(x).items():
        np.testing.assert_array_equal(loaded(x)[key], value)
