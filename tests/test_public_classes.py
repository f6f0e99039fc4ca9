"""Every public layer, backbone and model through the shared checks of `_model_checks`:
config round trip, .keras reload, trainable-weight count against an independent count,
dtype policy kept, one fit step. Plus: every public Keras class of the package is registered
and covered here."""

import inspect

import keras
import numpy as np
import pytest
from _model_checks import (
    aspp_params,
    aspp_v2_params,
    check_config_round_trip,
    check_public_class,
    conv_bn_relu_params,
    conv_params,
    decoder_params,
    resnet_channels,
    resnet_params,
    trainable_count,
    unet_params,
    xception65_params,
)

import keras_deeplab as kd

SIZE = 64
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
FEATS = RNG.normal(size=(2, 16, 16, 6)).astype("float32")
LOW = RNG.normal(size=(2, 32, 32, 5)).astype("float32")

R18 = resnet_channels("basic", 8)  # ResNet-18 at base width 8: C2..C5 = 8, 16, 32, 64
R18_PARAMS = resnet_params((2, 2, 2, 2), "basic", 8)
TINY = {"backbone": "resnet18", "backbone_kwargs": {"base_filters": 8}}


def _app_count(app, minus=(), **kwargs):
    ref = app(include_top=False, weights=None, input_shape=(None, None, 3), **kwargs) \
        if app is not keras.applications.MobileNetV2 else \
        app(include_top=False, weights=None, input_shape=(224, 224, 3), **kwargs)
    return trainable_count(ref) - sum(trainable_count(ref.get_layer(n)) for n in minus)


LAYER_CASES = {
    "AtrousConv2D": (lambda: kd.layers.AtrousConv2D(4, 3, dilation_rate=2, padding="same"),
                     FEATS, lambda: conv_params(3, 6, 4)),
    "AtrousDepthwiseConv2D": (
        lambda: kd.layers.AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same"),
        FEATS, lambda: 9 * 6 + 6),
    "BatchNormalization": (lambda: kd.layers.BatchNormalization(epsilon=1e-5), FEATS,
                           lambda: 2 * 6),  # gamma and beta of 6 channels
    "ConvBNReLU": (lambda: kd.layers.ConvBNReLU(4, 3, dilation_rate=2, separable=True),
                   FEATS, lambda: conv_bn_relu_params(6, 4, 3, separable=True)),
    "ASPP": (lambda: kd.layers.ASPP(4, rates=(1, 2), dropout=0.2, separable=True),
             FEATS, lambda: aspp_params(6, 4, 2, separable=True)),
    "ASPPV2": (lambda: kd.layers.ASPPV2(3, rates=(1, 2), head="fc", fc_filters=4, dropout=0.5),
               FEATS, lambda: aspp_v2_params(6, 3, 2, "fc", 4)),
    "DeepLabV3PlusDecoder": (
        lambda: kd.layers.DeepLabV3PlusDecoder(filters=4, low_level_filters=2, num_convs=2),
        [FEATS, LOW], lambda: decoder_params(6, 5, 4, 2, 2)),
    "ImageNormalization": (lambda: kd.layers.ImageNormalization("caffe"), IMAGES, lambda: 0),
    "ResizeLike": (lambda: kd.layers.ResizeLike("bilinear"), [FEATS, LOW], lambda: 0),
}

BACKBONE_CASES = {
    "ResNetBackbone": (lambda: kd.backbones.ResNetBackbone(depth=18, base_filters=8,
                                                           output_stride=16),
                       lambda: R18_PARAMS),
    "ResNetBackbone_bottleneck": (
        lambda: kd.backbones.ResNetBackbone(stage_blocks=(1, 1, 1, 1), base_filters=4,
                                            output_stride=8, multi_grid=(2,)),
        lambda: resnet_params((1, 1, 1, 1), "bottleneck", 4)),
    "VGG16Backbone": (lambda: kd.backbones.VGG16Backbone(output_stride=8),
                      lambda: _app_count(keras.applications.VGG16)),
    "MobileNetV2Backbone": (
        lambda: kd.backbones.MobileNetV2Backbone(alpha=0.35, output_stride=16),
        lambda: _app_count(keras.applications.MobileNetV2, ("Conv_1", "Conv_1_bn"), alpha=0.35)),
    "MobileNetV3LargeBackbone": (
        lambda: kd.backbones.MobileNetV3LargeBackbone(output_stride=8),
        lambda: _app_count(keras.applications.MobileNetV3Large, include_preprocessing=False)),
    # torchvision's published ResNet-50 count (25,557,032) minus its fc layer (2048 * 1000 + 1000)
    "TorchvisionResNetBackbone": (lambda: kd.backbones.TorchvisionResNetBackbone(depth=50),
                                  lambda: 25_557_032 - 2_049_000),
    "Xception65Backbone": (lambda: kd.backbones.Xception65Backbone(output_stride=8, multi_grid=(1, 2, 1)),
                           xception65_params),
}

MODEL_CASES = {
    "DeepLabV3Plus": (
        lambda: kd.models.DeepLabV3Plus(num_classes=5, aspp_filters=16, decoder_filters=16,
                                        low_level_filters=8, aux_head=True, **TINY),
        lambda: (R18_PARAMS + aspp_params(R18["C5"], 16, 3)
                 + decoder_params(16, R18["C2"], 16, 8, 2) + conv_params(1, 16, 5)
                 + conv_bn_relu_params(R18["C4"], 256, 3) + conv_params(1, 256, 5))),
    "DeepLabV3": (
        lambda: kd.models.DeepLabV3(num_classes=4, multi_grid=(1, 2), output_stride=8,
                                    aspp_filters=16, separable=True, **TINY),
        lambda: R18_PARAMS + aspp_params(R18["C5"], 16, 3, separable=True)
        + conv_params(1, 16, 4)),
    "DeepLabV2": (lambda: kd.models.DeepLabV2(num_classes=3, **TINY),
                  lambda: R18_PARAMS + aspp_v2_params(R18["C5"], 3, 4, "conv")),
    "FCN": (lambda: kd.models.FCN(num_classes=3, output_stride=8, **TINY),
            lambda: R18_PARAMS + conv_bn_relu_params(R18["C5"], R18["C5"] // 4, 3)
            + conv_params(1, R18["C5"] // 4, 3)),
    # torchvision's published num_params of deeplabv3_resnet50 / fcn_resnet50 (with aux head)
    "TorchvisionDeepLabV3": (lambda: kd.models.TorchvisionDeepLabV3(21, "resnet50", aux_head=True),
                             lambda: 42_004_074),
    "TorchvisionFCN": (lambda: kd.models.TorchvisionFCN(21, "resnet50", aux_head=True),
                       lambda: 35_322_218),
    "UNet": (lambda: kd.models.UNet(num_classes=3, filters=(8, 16, 32)),
             lambda: unet_params(3, (8, 16, 32))),
    "LRASPP": (lambda: kd.models.LRASPP(num_classes=5, output_stride=32),
               lambda: (_app_count(keras.applications.MobileNetV3Large, include_preprocessing=False)
                        + conv_bn_relu_params(960, 128, 1) + conv_params(1, 960, 128, bias=False)
                        + conv_params(1, 40, 5) + conv_params(1, 128, 5))),
    "DeepLabV3MobileNetV3": (
        lambda: kd.models.DeepLabV3MobileNetV3(num_classes=3, aux_head=True),
        lambda: (_app_count(keras.applications.MobileNetV3Large, include_preprocessing=False)
                 + aspp_params(960, 256, 3) + conv_bn_relu_params(256, 256, 3)
                 + conv_params(1, 256, 3) + conv_bn_relu_params(40, 10, 3) + conv_params(1, 10, 3))),
    # The TF DeepLab head (image pooling, separable atrous ASPP, decoder) on the tiny ResNet:
    # at Keras' initial weights MobileNetV2's features are ~1e-10 and the same for every
    # image, so some batch norms there get no gradient in one step (the real backbones are
    # checked in tests/test_tf_deeplab.py).
    "TFDeepLab": (
        lambda: kd.models.TFDeepLab(num_classes=3, aspp_rates=(1, 2), aspp_filters=16,
                                    decoder_filters=16, low_level_filters=8, **TINY),
        lambda: (R18_PARAMS + aspp_params(R18["C5"], 16, 2, separable=True)
                 + decoder_params(16, R18["C2"], 16, 8, 2, separable=True) + conv_params(1, 16, 3))),
    "PixelClassifier": (lambda: kd.models.PixelClassifier(num_classes=3, hidden=(8, 4)),
                        lambda: conv_params(1, 3, 8) + conv_params(1, 8, 4) + conv_params(1, 4, 3)),
}


#: Full-size torchvision layouts and Xception-65 (no narrow variant; 1-3 min each on 2 cores):
#: marked large.
LARGE_CASES = {"TorchvisionResNetBackbone", "TorchvisionDeepLabV3", "TorchvisionFCN",
               "Xception65Backbone"}


def _cases(cases):
    return [pytest.param(n, marks=pytest.mark.large) if n in LARGE_CASES else n
            for n in sorted(cases)]


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_public_layer(name, tmp_path):
    make, inputs, expected = LAYER_CASES[name]
    check_public_class(make, inputs, expected(), tmp_path)


@pytest.mark.parametrize("name", _cases(BACKBONE_CASES))
def test_public_backbone(name, tmp_path):
    make, expected = BACKBONE_CASES[name]
    check_public_class(make, IMAGES, expected(), tmp_path)


@pytest.mark.parametrize("name", _cases(MODEL_CASES))
def test_public_model(name, tmp_path):
    make, expected = MODEL_CASES[name]
    check_public_class(make, IMAGES, expected(), tmp_path)


def _public_classes(module, base):
    return {name: obj for name, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, base) and not name.startswith("_")}


def test_every_public_layer_and_model_is_checked_here():
    abstract = {"Backbone", "SegmentationModel"}
    covered = set(LAYER_CASES) | {k.split("_")[0] for k in BACKBONE_CASES} | set(MODEL_CASES)
    public = (set(_public_classes(kd.layers, keras.layers.Layer))
              | set(_public_classes(kd.backbones, keras.Model))
              | set(_public_classes(kd.models, keras.Model))) - abstract
    assert public <= covered, sorted(public - covered)


def test_every_public_keras_class_is_registered_under_the_package():
    bases = (keras.layers.Layer, keras.losses.Loss, keras.metrics.Metric,
             keras.optimizers.schedules.LearningRateSchedule, keras.optimizers.Optimizer)
    modules = (kd.layers, kd.backbones, kd.models, kd.losses, kd.metrics, kd.training, kd.data)
    unregistered = []
    for module in modules:
        for name, cls in _public_classes(module, bases).items():
            if not cls.__module__.startswith("keras_deeplab"):
                continue
            if not keras.saving.get_registered_name(cls).startswith("keras_deeplab>"):
                unregistered.append(f"{module.__name__}.{name}")
    assert not unregistered, unregistered


def test_device_augmented_model_round_trip_and_checkpoints_hold_the_inner_model(tmp_path):
    model = kd.models.PixelClassifier(num_classes=6, hidden=(4,))
    trainer = kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation(24))
    clone = check_config_round_trip(trainer)
    assert isinstance(clone.model, kd.models.PixelClassifier) and clone.augmentation.crop_size == (24, 24)
    assert trainer.trainable_weights == model.trainable_weights
    ds = kd.data.synthetic("train", num_images=8, image_size=32, batch_size=4, crop_size=24,
                           output="tuple", augment_on="device")
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=kd.losses.CrossEntropy())
    kd.training.fit(trainer, ds, 1, str(tmp_path / "run"), tensorboard=False, verbose=0)
    last = keras.saving.load_model(str(tmp_path / "run" / "last.keras"))
    assert type(last) is kd.models.PixelClassifier  # the segmentation model, not the wrapper
    for got, want in zip(last.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
