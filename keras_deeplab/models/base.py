"""Shared plumbing of the functional segmentation models (backbone, heads, config).

The stage contract every DeepLab model follows (Model Garden ``segmentation_model.py``,
torchvision ``segmentation/_utils.py``):

    images (B, H, W, 3) float RGB in [0, 255]; normalisation is inside the backbone
      -> backbone       `keras_deeplab.backbones.Backbone`: {"C2", "C3", "C4", "C5"}
                        (strides 4, 8, 16, 32; dilation caps them at ``output_stride``)
      -> neck           ASPP on C5 (`layers.ASPP`; DeepLabv2: `layers.ASPPV2`, which
                        already ends in per-rate classifiers)
      -> decoder        DeepLabv3+ only: `layers.DeepLabV3PlusDecoder` on [neck, C2]
      -> classifier     1x1 conv to ``num_classes`` (`classifier`)
      -> resize         bilinear, half-pixel centres, to the input size (`layers.ResizeLike`)
      -> float32 logits (B, H, W, num_classes) (``{"logits", "aux_logits"}`` with an
                        auxiliary head on C4)

Models read backbone features by these keys only. FCN is backbone -> conv head ->
classifier -> resize; UNet and PixelClassifier have no backbone.

Every constructor argument is returned by ``get_config()`` under its own name, plus the
dtype policy the model was built under (a rebuild from the config uses it again). A model
built inside a multi-replica ``tf.distribute`` strategy scope gets synchronized batch norm.
"""

import keras

from keras_deeplab.backbones import Backbone, get_backbone
from keras_deeplab.backbones.base import contract_init, serialize_dtype_policy
from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.utils import AUGMENT_PARAMS, check_output_stride, register


def default_aspp_rates(output_stride):
    """DeepLab's ASPP rates: (6, 12, 18) at OS16, doubled at OS8, halved at OS32."""
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


def resolve_backbone(backbone, output_stride, multi_grid, backbone_weights, backbone_kwargs):
    """Returns (backbone_model, output_stride) from a name, a serialized backbone or an instance.

    With an instance, its own configuration is what counts: ``output_stride`` and
    ``multi_grid`` must be None or equal to the instance's, and ``backbone_kwargs`` must be
    empty; anything else raises ValueError (it would be recorded in the model's config
    while the backbone ignores it).
    """
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, keras.Model) and not isinstance(backbone, Backbone):
        raise TypeError(
            f"backbone must be a name or a keras_deeplab.backbones.Backbone (features keyed "
            f"C2..C5); got {type(backbone).__name__}. Subclass Backbone to plug in your own.")
    if isinstance(backbone, Backbone):
        own = backbone.output_stride
        if output_stride is not None and output_stride != own:
            raise ValueError(
                f"output_stride={output_stride} disagrees with the given backbone's output "
                f"stride {own}; build the backbone with output_stride={output_stride}."
            )
        output_stride = own
        own_grid = getattr(backbone, "multi_grid", None)
        if multi_grid is not None and tuple(multi_grid) != own_grid:
            raise ValueError(
                f"multi_grid={tuple(multi_grid)} is ignored by a backbone instance (its own "
                f"multi_grid is {own_grid}); build the backbone with multi_grid="
                f"{tuple(multi_grid)}, or pass the backbone by name.")
        if backbone_kwargs:
            raise ValueError(
                f"backbone_kwargs={backbone_kwargs!r} only apply when the backbone is given "
                "by name; configure the backbone instance itself instead.")
        if backbone_weights is not None:
            get_backbone(backbone, weights=backbone_weights)
        return backbone, output_stride
    output_stride = check_output_stride(16 if output_stride is None else output_stride)
    model = get_backbone(
        backbone,
        output_stride=output_stride,
        multi_grid=multi_grid,
        weights=backbone_weights,
        **(backbone_kwargs or {}),
    )
    return model, output_stride


def backbone_config(backbone, original):
    """What ``get_config`` stores for the backbone: its name, or its serialized form."""
    if isinstance(original, str):
        return original
    return keras.saving.serialize_keras_object(backbone)


def classifier(x, reference, num_classes, name):
    """1x1 classifier, bilinear resize to ``reference`` and a float32 output."""
    x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    x = ResizeLike(name=f"{name}_upsample")([x, reference])
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


def aux_classifier(features, reference, num_classes, filters=256, dropout=0.1):
    """FCN-style auxiliary head on a stride-16 feature map (PSPNet's deep supervision)."""
    x = ConvBNReLU(filters, 3, name="aux_conv")(features)
    x = keras.layers.Dropout(dropout, name="aux_dropout")(x)
    return classifier(x, reference, num_classes, name="aux_logits")


@register
class SegmentationModel(keras.Model):
    """Base class: a functional model whose ``get_config`` returns its ctor arguments.

    Subclasses build the graph following the stage contract of this module, call
    ``super().__init__(inputs, outputs)`` and then ``self._set_config(...)`` with every
    constructor argument under its own name. ``backbone_weights`` is stored as None: the
    weights travel in the ``.keras`` file, and reloading must not download ImageNet weights
    again. ``get_config()`` also stores ``dtype`` (the policy the model was built under)
    and every subclass accepts ``dtype=`` to build under that policy (see
    `keras_deeplab.backbones.base.contract_init`).

    Every model also accepts ``class_names`` (list of str, index = class id) and ``palette``
    (a palette name such as "voc" or a list of (r, g, b) in [0, 255]), both None by default,
    kept as attributes and in ``get_config()``; `kd.inference.Predictor` uses them as its
    defaults (pretrained checkpoints set them, `keras_deeplab.pretrained`).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = contract_init(cls.__dict__["__init__"])

    def __init__(self, *args, class_names=None, palette=None, **kwargs):
        super().__init__(*args, **kwargs)
        #: list of str or None: class names, index = class id (legends, evaluation tables).
        self.class_names = list(class_names) if class_names is not None else None
        #: palette name ("voc", "cityscapes") or list of (r, g, b), or None: the Predictor's
        #: default colours.
        self.palette = palette if palette is None or isinstance(palette, str) else [
            [int(c) for c in colour] for colour in palette]

    def _set_config(self, **config):
        self._kd_config = dict(config)

    def _set_backbone_config(self, backbone, original, output_stride, backbone_kwargs, **config):
        """`_set_config` for models on a backbone: also records the backbone's name (looked up
        by the `backbone` property) and the output stride, and stores the backbone entries
        (its name or serialized form, ``backbone_weights=None``, ``backbone_kwargs``)."""
        self._backbone_name = backbone.name
        self.output_stride = output_stride
        self._set_config(
            backbone=backbone_config(backbone, original),
            output_stride=output_stride,
            backbone_weights=None,
            backbone_kwargs=dict(backbone_kwargs) if backbone_kwargs else None,
            **config,
        )

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": serialize_dtype_policy(self)}
        config.update(self._kd_config)
        config.update(class_names=self.class_names, palette=self.palette)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def call(self, inputs, training=None, mask=None, **kwargs):
        if isinstance(inputs, dict) and AUGMENT_PARAMS in inputs:
            # Keras would pick "images" out of the dict and train on the full-size images,
            # silently skipping the augmentation.
            raise ValueError(
                f"{self.name} got a batch with 'augment_params' (a pipeline built with "
                "augment_on='device'): wrap the model in "
                "kd.training.DeviceAugmentedModel(model, kd.data.SegmentationAugmentation("
                "crop_size, augment)) to augment in the train step, or build the pipeline "
                "with augment_on='data'.")
        return super().call(inputs, training=training, mask=mask, **kwargs)

    @property
    def backbone(self):
        """The backbone sub-model (looked up, not stored, so weights are saved once)."""
        return self.get_layer(self._backbone_name)

    @property
    def num_classes(self):
        return self._kd_config["num_classes"]
