"""DeepLabv3 / v3+ as the TensorFlow DeepLab model zoo builds them (``research/deeplab``).

`TFDeepLab` is ``research/deeplab/model.py``'s graph on an Xception-65 or MobileNetV2
backbone, with the layer names of the original's TF1 variable scopes, so the model-zoo
checkpoints load by name (`keras_deeplab.pretrained.tf_checkpoint`). Registered with
`keras_deeplab.pretrained` as the architectures ``deeplabv3plus_xception65``,
``deeplabv3_mobilenetv2`` and ``deeplabv3plus_mobilenetv2``.
"""

import re

import keras

from keras_deeplab.backbones.mobilenet_v2 import MobileNetV2Backbone
from keras_deeplab.backbones.xception import Xception65Backbone
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.layers.separable import conv_bn, separable_conv_bn
from keras_deeplab.models.base import SegmentationModel, default_aspp_rates, resolve_backbone
from keras_deeplab.pretrained.registry import register_architecture
from keras_deeplab.pretrained.tf_checkpoint import tf_named_layers
from keras_deeplab.utils import as_pair, register

#: Batch norm of the ASPP and decoder (model.py ``batch_norm_params``; the backbones use 1e-3).
HEAD_BN_EPSILON = 1e-5
HEAD_BN_MOMENTUM = 0.9997
#: Decoder output strides the original builds (one decoder end point, at stride 4).
DECODER_OUTPUT_STRIDES = (None, 4)


def scale_dimension(dim, scale):
    """model.py's ``scale_dimension``: ``int((dim - 1) * scale + 1)`` (= ceil(dim / s) for
    ``scale = 1 / s``: the size of a stride-``s`` feature map of a ``dim``-pixel input)."""
    return int((float(dim) - 1.0) * scale + 1.0)


def _head_conv(x, filters, name):
    return conv_bn(x, filters, 1, name, bn_epsilon=HEAD_BN_EPSILON, bn_momentum=HEAD_BN_MOMENTUM)


def _head_separable(x, filters, name, rate=1):
    # split_separable_conv2d: depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.
    return separable_conv_bn(x, filters, name, dilation_rate=rate, depth_activation=True,
                             bn_epsilon=HEAD_BN_EPSILON, bn_momentum=HEAD_BN_MOMENTUM)


def _image_pooling(x, filters, crop_size, output_stride):
    """The image-level branch: average pool -> 1x1 conv-BN-ReLU (``image_pooling``) ->
    align-corners bilinear resize back to the feature map."""
    if crop_size is None:
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling-pool")(x)
    else:
        window = tuple(scale_dimension(c, 1.0 / output_stride) for c in crop_size)
        feature = tuple(x.shape[1:3])
        if any(f is not None and f < w for f, w in zip(feature, window)):
            raise ValueError(
                f"TFDeepLab: image_pooling_crop_size={tuple(crop_size)} pools {window} feature "
                f"pixels at output stride {output_stride}, but input_shape gives a {feature} "
                "feature map: the input must be at least the crop size (the original pads "
                "its input to the crop size). Give a larger input_shape, a smaller "
                "image_pooling_crop_size, or None (global pooling).")
        pooled = keras.layers.AveragePooling2D(window, strides=1, padding="valid",
                                               name="image_pooling-pool")(x)
    pooled = _head_conv(pooled, filters, "image_pooling")
    return ResizeLike(align_corners=True, name="image_pooling-resize")([pooled, x])


@register
class TFDeepLab(SegmentationModel):
    """DeepLabv3 / DeepLabv3+ exactly as TensorFlow's ``research/deeplab/model.py`` builds it.

    Graph (names are the original's TF scopes with "/" written as "-"):

    - backbone (`Xception65Backbone` named "xception_65", or `MobileNetV2Backbone`), which
      scales [0, 255] RGB to [-1, 1] itself;
    - ASPP on ``C5`` (``extract_features``): branches in the original's order, each with
      batch norm (epsilon 1e-5) and ReLU, ``aspp_filters`` channels:
      ``image_pooling`` (average pool -> 1x1 conv -> bilinear align-corners resize back),
      ``aspp0`` (1x1 conv), ``aspp1..`` (split separable 3x3 convs at ``aspp_rates``:
      depthwise ``aspp<i>_depthwise`` -> BN -> ReLU -> pointwise ``aspp<i>_pointwise`` -> BN ->
      ReLU); concatenated -> ``concat_projection`` (1x1 conv-BN-ReLU) -> dropout;
    - decoder (``refine_by_decoder``, with ``decoder_output_stride=4``):
      ``decoder-feature_projection0`` (1x1 conv to ``low_level_filters``, BN, ReLU) on the
      backbone's ``low_level_feature``; the ASPP output resized (bilinear, align corners) to
      it; concatenated (ASPP first); ``decoder-decoder_conv0`` and ``decoder-decoder_conv1``
      (split separable 3x3 to ``decoder_filters``, ReLU after both batch norms);
    - ``logits-semantic``: 1x1 conv with bias to ``num_classes``;
    - bilinear align-corners resize to the input size, float32 output.

    Input: float RGB (B, H, W, 3) in [0, 255], any size. Output: float32 logits
    (B, H, W, num_classes).

    Args:
        num_classes: int. Number of classes. Defaults to 21 (PASCAL VOC).
        backbone: str or `keras_deeplab.backbones.Backbone`. The original's "xception65"
            or "mobilenetv2", another name of `kd.backbones.get_backbone`, or an instance
            (its own output stride counts). Defaults to "xception65".
        output_stride: int or None. 8, 16 or 32; None means 16 (or the instance's).
        backbone_weights: None or, for "mobilenetv2", "imagenet" / a keras.applications
            weights file (Xception-65 has none: use ``kd.models.from_pretrained``).
            Defaults to None. Not kept in the config.
        multi_grid: tuple of 3 ints or None. Xception-65 exit_flow/block2 rate multipliers
            (the original's ``multi_grid``). Defaults to None.
        aspp_rates: tuple of ints or None. Rates of the separable atrous branches. None
            follows the output stride ((6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at
            32); ``()`` builds no atrous branch (the MobileNetV2 models' head: image
            pooling + 1x1 only). Defaults to None.
        image_pooling: bool. The image-level branch (``add_image_level_feature``).
            Defaults to True.
        image_pooling_crop_size: (height, width) or None. None pools globally (the
            original at inference, where the crop is the whole image). A pair is the
            original's ``image_pooling_crop_size``: an average pool of
            ``scale_dimension(crop, 1 / output_stride)`` pixels, stride 1
            (``image_pooling_stride`` 1), "valid" padding, then resized (align corners)
            back to the feature map; the input must then be at least the crop size (the
            original pads its input to the crop size: pad smaller images to it yourself,
            or export with ``input_size`` = the crop size, as ``kd.inference.Predictor``
            pads smaller inputs to an exported model's fixed size). A static
            ``input_shape`` smaller than that raises ValueError here; with a dynamic input
            shape a smaller image fails when called (TF: InvalidArgumentError "output size
            would be negative" from the average pool).
            Defaults to None.
        decoder_output_stride: 4 or None. 4 adds the DeepLabv3+ decoder; None returns the
            ASPP logits (DeepLabv3). Defaults to 4.
        low_level_feature: str or None. Backbone feature key the decoder reads. None means
            the original's decoder end point: "C2_depthwise" (``layer_4/depthwise_output``)
            on MobileNetV2, "C2" otherwise (Xception-65's
            ``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise``).
            Defaults to None.
        aspp_filters: int. Defaults to 256.
        decoder_filters: int. Defaults to 256.
        low_level_filters: int. Defaults to 48.
        dropout: float. Dropout after ``concat_projection`` (the original keeps 0.9).
            Defaults to 0.1.
        backbone_kwargs: dict or None. Extra arguments of a backbone given by name.
        input_shape: tuple. Defaults to (None, None, 3).
        class_names: list of str or None. Stored with the model. Defaults to None.
        palette: palette name or colours, or None. Stored with the model. Defaults to None.
        dtype: dtype policy to build under. Defaults to the global policy; kept in
            ``get_config()``.

    Raises:
        ValueError: an output stride other than 8, 16 or 32 (also through
            ``kd.models.with_output_stride``); ``decoder_output_stride`` not 4 or None; a
            ``low_level_feature`` the backbone does not have (the message lists its keys);
            an ``image_pooling_crop_size`` that is not two positive ints, or larger than a
            static ``input_shape`` (its pooling window exceeds the feature map); an instance
            given with another ``output_stride``.

    Example:
    >>> model = TFDeepLab(num_classes=21, backbone="xception65")          # DeepLabv3+ OS16
    >>> mobile = TFDeepLab(21, backbone="mobilenetv2", aspp_rates=(), decoder_output_stride=None)
    >>> # the model zoo's weights: kd.models.from_pretrained("deeplabv3plus_xception65.tf_voc_trainaug")

    Reference: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
    Image Segmentation", ECCV 2018; Chen et al., "Rethinking Atrous Convolution for
    Semantic Image Segmentation", arXiv:1706.05587; tensorflow/models
    ``research/deeplab/model.py``.
    """

    def __init__(
        self,
        num_classes=21,
        backbone="xception65",
        output_stride=None,
        backbone_weights=None,
        multi_grid=None,
        aspp_rates=None,
        image_pooling=True,
        image_pooling_crop_size=None,
        decoder_output_stride=4,
        low_level_feature=None,
        aspp_filters=256,
        decoder_filters=256,
        low_level_filters=48,
        dropout=0.1,
        backbone_kwargs=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        if decoder_output_stride not in DECODER_OUTPUT_STRIDES:
            raise ValueError(
                f"TFDeepLab: decoder_output_stride={decoder_output_stride!r}; the original "
                f"builds {DECODER_OUTPUT_STRIDES} (4: DeepLabv3+ decoder on the stride-4 end "
                "point, None: no decoder).")
        if image_pooling_crop_size is not None:
            crop = as_pair(image_pooling_crop_size, "image_pooling_crop_size")
            if min(crop) < 1:
                raise ValueError(f"TFDeepLab: image_pooling_crop_size={crop} must be two "
                                 "positive ints (height, width) in input pixels, or None.")
            image_pooling_crop_size = crop
        original = backbone
        backbone, output_stride = resolve_backbone(
            backbone, output_stride, multi_grid, backbone_weights, backbone_kwargs)
        rates = tuple(aspp_rates) if aspp_rates is not None else default_aspp_rates(output_stride)

        inputs = keras.Input(shape=input_shape, name="images")
        features = backbone(inputs)
        x = features["C5"]
        branches = []
        if image_pooling:
            branches.append(_image_pooling(x, aspp_filters, image_pooling_crop_size, output_stride))
        branches.append(_head_conv(x, aspp_filters, "aspp0"))
        for i, rate in enumerate(rates, 1):
            branches.append(_head_separable(x, aspp_filters, f"aspp{i}", rate))
        y = keras.layers.Concatenate(name="aspp-concat")(branches) if len(branches) > 1 else branches[0]
        y = _head_conv(y, aspp_filters, "concat_projection")
        y = keras.layers.Dropout(dropout, name="concat_projection_dropout")(y)

        if decoder_output_stride is not None:
            key = low_level_feature or (
                "C2_depthwise" if isinstance(backbone, MobileNetV2Backbone) else "C2")
            if key not in features:
                raise ValueError(
                    f"TFDeepLab: low_level_feature={key!r} is not a feature of backbone "
                    f"{backbone.name!r} (it has {sorted(features)}); pass one of those.")
            low = _head_conv(features[key], low_level_filters, "decoder-feature_projection0")
            y = ResizeLike(align_corners=True, name="decoder-resize")([y, low])
            y = keras.layers.Concatenate(name="decoder-concat")([y, low])
            y = _head_separable(y, decoder_filters, "decoder-decoder_conv0")
            y = _head_separable(y, decoder_filters, "decoder-decoder_conv1")

        # Keras' default initializer, not the original's truncated normal (stddev 0.01):
        # with it the first steps' gradients of the head's BN scales are below float32
        # resolution (one SGD step at learning rate 0.1 leaves them unchanged).
        y = keras.layers.Conv2D(num_classes, 1, use_bias=True, name="logits-semantic")(y)
        y = ResizeLike(align_corners=True, name="logits-resize")([y, inputs])
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(y)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_backbone_config(
            backbone, original, output_stride, backbone_kwargs,
            num_classes=num_classes,
            multi_grid=tuple(multi_grid) if multi_grid is not None else None,
            aspp_rates=tuple(aspp_rates) if aspp_rates is not None else None,
            image_pooling=bool(image_pooling),
            image_pooling_crop_size=image_pooling_crop_size,
            decoder_output_stride=decoder_output_stride,
            low_level_feature=low_level_feature,
            aspp_filters=aspp_filters,
            decoder_filters=decoder_filters,
            low_level_filters=low_level_filters,
            dropout=dropout,
            input_shape=tuple(input_shape),
        )


# --- the model-zoo architectures ---------------------------------------------------------------

#: Name of the MobileNetV2 backbone sub-model: the original's top scope.
MOBILENET_V2_SCOPE = "MobilenetV2"

_MNV2_BLOCK = re.compile(r"^block_(\d+)_(expand|depthwise|project)(_BN)?$")
_MNV2_FIRST = re.compile(r"^expanded_conv_(depthwise|project)(_BN)?$")


def mobilenet_v2_scope(layer_name):
    """The slim scope (below ``MobilenetV2/``) of a `MobileNetV2Backbone` layer.

    keras.applications names -> ``research/slim/nets/mobilenet`` scopes: ``Conv1`` ->
    ``Conv``, ``bn_Conv1`` -> ``Conv/BatchNorm``, ``expanded_conv_{depthwise,project}`` ->
    ``expanded_conv/{depthwise,project}``, ``block_{i}_{expand,depthwise,project}`` ->
    ``expanded_conv_{i}/{expand,depthwise,project}``, a ``_BN`` suffix -> ``/BatchNorm``.
    (DeepLab builds MobileNetV2 up to ``layer_18`` = ``expanded_conv_16``: no ``Conv_1``.)

    Raises:
        ValueError: a name outside that table.
    """
    if layer_name == "Conv1":
        return "Conv"
    if layer_name == "bn_Conv1":
        return "Conv/BatchNorm"
    match = _MNV2_FIRST.match(layer_name)
    if match:
        return f"expanded_conv/{match[1]}" + ("/BatchNorm" if match[2] else "")
    match = _MNV2_BLOCK.match(layer_name)
    if match:
        return f"expanded_conv_{match[1]}/{match[2]}" + ("/BatchNorm" if match[3] else "")
    raise ValueError(f"MobileNetV2Backbone layer {layer_name!r} has no slim MobilenetV2 scope "
                     "(keras_deeplab/models/tf_deeplab.py: mobilenet_v2_scope).")


def tf_deeplab_named_layers(model):
    """``map_keys`` of the TF DeepLab architectures: ``{TF variable scope: layer}``.

    Head layers and an Xception-65 backbone follow the naming rule (`tf_named_layers`); a
    `MobileNetV2Backbone` keeps its keras.applications names and is translated by
    `mobilenet_v2_scope` (scopes below ``MobilenetV2/``).
    """
    mobilenet = {id(layer) for sub in model.layers if isinstance(sub, MobileNetV2Backbone)
                 for layer in sub.layers}
    mapping = {}
    for scope, layer in tf_named_layers(model).items():
        if id(layer) in mobilenet:
            scope = f"{MOBILENET_V2_SCOPE}/{mobilenet_v2_scope(layer.name)}"
        mapping[scope] = layer
    return mapping


def build_deeplabv3plus_xception65(num_classes, aux=False, class_names=None, palette=None):
    """The model zoo's DeepLabv3+ Xception-65 (VOC, Cityscapes, ADE20K): OS16, ASPP rates
    6/12/18 with image pooling, decoder at OS4. ``aux`` is ignored (no auxiliary head)."""
    return TFDeepLab(num_classes, backbone=Xception65Backbone(output_stride=16, name="xception_65"),
                     decoder_output_stride=4, class_names=class_names, palette=palette,
                     name="deeplabv3plus_xception65")


def build_deeplabv3_mobilenetv2(num_classes, aux=False, class_names=None, palette=None):
    """The model zoo's DeepLabv3 MobileNetV2 (VOC, Cityscapes): OS16, image pooling + 1x1
    ASPP (no atrous branch), no decoder. ``aux`` is ignored."""
    backbone = MobileNetV2Backbone(output_stride=16, name=MOBILENET_V2_SCOPE)
    return TFDeepLab(num_classes, backbone=backbone, aspp_rates=(), decoder_output_stride=None,
                     class_names=class_names, palette=palette, name="deeplabv3_mobilenetv2")


def build_deeplabv3plus_mobilenetv2(num_classes, aux=False, class_names=None, palette=None):
    """The model zoo's ADE20K MobileNetV2: as ``deeplabv3_mobilenetv2`` plus the decoder at
    OS4 on ``layer_4/depthwise_output`` ("C2_depthwise", 144 channels). ``aux`` is ignored."""
    backbone = MobileNetV2Backbone(output_stride=16, name=MOBILENET_V2_SCOPE)
    return TFDeepLab(num_classes, backbone=backbone, aspp_rates=(), decoder_output_stride=4,
                     low_level_feature="C2_depthwise", class_names=class_names, palette=palette,
                     name="deeplabv3plus_mobilenetv2")


register_architecture("deeplabv3plus_xception65", build_deeplabv3plus_xception65,
                      tf_deeplab_named_layers)
register_architecture("deeplabv3_mobilenetv2", build_deeplabv3_mobilenetv2,
                      tf_deeplab_named_layers)
register_architecture("deeplabv3plus_mobilenetv2", build_deeplabv3plus_mobilenetv2,
                      tf_deeplab_named_layers)

__all__ = ["TFDeepLab", "mobilenet_v2_scope", "scale_dimension", "tf_deeplab_named_layers"]
