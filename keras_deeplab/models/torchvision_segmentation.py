"""torchvision's DeepLabV3 and FCN (ResNet) as our models, layer names = torchvision's modules.

Registered with `keras_deeplab.pretrained` as the architectures ``fcn_resnet50``,
``fcn_resnet101``, ``deeplabv3_resnet50`` and ``deeplabv3_resnet101``.
"""

import functools

import keras

from keras_deeplab.backbones.base import Backbone
from keras_deeplab.backbones.resnet_torchvision import (
    BN_EPSILON,
    BN_MOMENTUM,
    TorchvisionResNetBackbone,
)
from keras_deeplab.layers.atrous_conv import AtrousConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.models.base import SegmentationModel
from keras_deeplab.pretrained.convert import torch_named_layers
from keras_deeplab.pretrained.registry import register_architecture
from keras_deeplab.utils import register

#: torchvision ``DeepLabHead``'s ASPP rates (its models run at output stride 8).
TORCHVISION_ASPP_RATES = (12, 24, 36)


def _bn(name):
    return BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv_bn_relu(x, filters, kernel, conv_name, bn_name, dilation=1):
    # AtrousConv2D: one native dilated CONV_2D in TFLite (Conv2D lowers to space-to-batch).
    x = AtrousConv2D(filters, kernel, padding="same", dilation_rate=dilation,
                     use_bias=False, name=conv_name)(x)
    x = _bn(bn_name)(x)
    return keras.layers.ReLU(name=f"{bn_name}-relu")(x)


def fcn_head(x, num_classes, prefix):
    """torchvision ``FCNHead``: 3x3 conv (in/4 channels, no bias) -> BN -> ReLU ->
    dropout 0.1 -> 1x1 conv (with bias) to ``num_classes``; layers ``{prefix}-0/-1/-4``."""
    x = _conv_bn_relu(x, x.shape[-1] // 4, 3, f"{prefix}-0", f"{prefix}-1")
    x = keras.layers.Dropout(0.1, name=f"{prefix}-3")(x)
    return keras.layers.Conv2D(num_classes, 1, name=f"{prefix}-4")(x)


def deeplab_head(x, num_classes, prefix="classifier", rates=TORCHVISION_ASPP_RATES, filters=256):
    """torchvision ``DeepLabHead``: ASPP (1x1, three 3x3 atrous, image pooling; 256 channels
    each, concatenated, 1x1 projection, dropout 0.5) -> 3x3 conv -> BN -> ReLU -> 1x1
    classifier. Differs from `keras_deeplab.layers.ASPP` in the dropout (0.5), the extra
    3x3 conv and BN epsilon; layer names are torchvision's with "-" for "."
    (``classifier-0-convs-1-0``)."""
    aspp = f"{prefix}-0"
    branches = [_conv_bn_relu(x, filters, 1, f"{aspp}-convs-0-0", f"{aspp}-convs-0-1")]
    for i, rate in enumerate(rates):
        branches.append(_conv_bn_relu(x, filters, 3, f"{aspp}-convs-{i + 1}-0",
                                      f"{aspp}-convs-{i + 1}-1", dilation=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{aspp}-convs-4-0")(x)
    pooled = _conv_bn_relu(pooled, filters, 1, f"{aspp}-convs-4-1", f"{aspp}-convs-4-2")
    # Bilinear from 1x1 (align_corners=False) is a broadcast, as in torchvision.
    branches.append(ResizeLike(name=f"{aspp}-convs-4-resize")([pooled, x]))
    y = keras.layers.Concatenate(name=f"{aspp}-concat")(branches)
    y = _conv_bn_relu(y, filters, 1, f"{aspp}-project-0", f"{aspp}-project-1")
    y = keras.layers.Dropout(0.5, name=f"{aspp}-project-3")(y)
    y = _conv_bn_relu(y, filters, 3, f"{prefix}-1", f"{prefix}-2")
    return keras.layers.Conv2D(num_classes, 1, name=f"{prefix}-4")(y)


def _upsample(x, inputs, name):
    x = ResizeLike(name=f"{name}-resize")([x, inputs])  # bilinear, align_corners=False
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


def _resolve(backbone, output_stride):
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, Backbone):
        return backbone, backbone
    names = {"resnet50": 50, "resnet101": 101, "resnet152": 152}
    if backbone not in names:
        raise ValueError(f"backbone={backbone!r}: expected one of {sorted(names)} or a Backbone "
                         "instance (features C2..C5; C4 with 1024 channels for the aux head).")
    return TorchvisionResNetBackbone(depth=names[backbone], output_stride=output_stride,
                                     name="backbone"), backbone


class _TorchvisionModel(SegmentationModel):
    """Shared constructor of `TorchvisionDeepLabV3` and `TorchvisionFCN`."""

    _head = None

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=False,
                 input_shape=(None, None, 3), **kwargs):
        model, original = _resolve(backbone, output_stride)
        inputs = keras.Input(shape=input_shape, name="images")
        features = model(inputs)
        outputs = _upsample(type(self)._head(features["C5"], num_classes), inputs, "logits")
        if aux_head:
            aux = fcn_head(features["C4"], num_classes, "aux_classifier")
            outputs = {"logits": outputs, "aux_logits": _upsample(aux, inputs, "aux_logits")}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._backbone_name = model.name
        self.output_stride = model.output_stride
        self._set_config(
            num_classes=num_classes,
            backbone=original if isinstance(original, str) else keras.saving.serialize_keras_object(model),
            output_stride=model.output_stride,
            aux_head=bool(aux_head),
            input_shape=tuple(input_shape),
        )


@register
class TorchvisionDeepLabV3(_TorchvisionModel):
    """torchvision's ``deeplabv3_resnet50/101``: dilated ResNet v1.5 (OS8) -> DeepLabHead.

    Graph (``torchvision.models.segmentation.deeplabv3``): `TorchvisionResNetBackbone`
    (named "backbone") -> ``DeepLabHead(2048)`` on C5 (ASPP rates 12/24/36 with image
    pooling, projection + dropout 0.5, 3x3 conv, 1x1 classifier) -> bilinear resize
    (align_corners=False) to the input; with ``aux_head``, ``FCNHead(1024)`` on C4 too.
    Layer names are torchvision's module names ("-" for "."), so `keras_deeplab.pretrained` converts its
    checkpoints one to one.

    Input: float RGB (B, H, W, 3) in [0, 255] (torchvision's normalisation is inside).
    Output: float32 logits (B, H, W, num_classes), or ``{"logits", "aux_logits"}``.

    Args:
        num_classes: int. Number of classes (21 for the VOC-label checkpoints).
        backbone: str or Backbone. "resnet50", "resnet101", "resnet152" (torchvision
            layout) or an instance. Defaults to "resnet50".
        output_stride: int. 8 (torchvision), 16 or 32; string backbones only. Defaults to 8.
        aux_head: bool. torchvision's auxiliary FCN head on C4. Defaults to False.
        input_shape: tuple. Defaults to (None, None, 3).
        class_names: list of str or None. Stored with the model. Defaults to None.
        palette: palette name or colours, or None. Stored with the model. Defaults to None.
        dtype: dtype policy to build under. Defaults to the global policy.

    Example:
    >>> model = TorchvisionDeepLabV3(21, "resnet101", aux_head=True)
    >>> # or with torchvision's weights: kd.models.from_pretrained("deeplabv3_resnet101.torchvision_coco_voc")

    Reference: Chen et al., arXiv:1706.05587; torchvision ``models/segmentation/deeplabv3.py``.
    """

    _head = staticmethod(deeplab_head)


@register
class TorchvisionFCN(_TorchvisionModel):
    """torchvision's ``fcn_resnet50/101``: dilated ResNet v1.5 (OS8) -> FCNHead(2048).

    ``FCNHead``: 3x3 conv to 512 channels, BN, ReLU, dropout 0.1, 1x1 classifier; then a
    bilinear resize (align_corners=False) to the input; ``aux_head`` adds ``FCNHead(1024)``
    on C4. Arguments, input and output as `TorchvisionDeepLabV3`.

    Example:
    >>> model = TorchvisionFCN(21, "resnet50", aux_head=True)

    Reference: Long et al., CVPR 2015; torchvision ``models/segmentation/fcn.py``.
    """

    _head = staticmethod(functools.partial(fcn_head, prefix="classifier"))


def _builder(cls, depth):
    def build(num_classes, aux, class_names=None, palette=None):
        return cls(num_classes, backbone=f"resnet{depth}", aux_head=aux,
                   class_names=class_names, palette=palette)

    build.__name__ = f"build_{cls.__name__}_resnet{depth}"
    return build


for _depth in (50, 101):
    register_architecture(f"deeplabv3_resnet{_depth}", _builder(TorchvisionDeepLabV3, _depth),
                          torch_named_layers)
    register_architecture(f"fcn_resnet{_depth}", _builder(TorchvisionFCN, _depth),
                          torch_named_layers)
