"""Shared plumbing of the functional segmentation models (config, heads, output)."""

import keras

from keras_deeplab.backbones import get_backbone
from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.resize import ResizeLike
from keras_deeplab.utils import AUGMENT_PARAMS, check_output_stride


def default_aspp_rates(output_stride):
    """DeepLab's ASPP rates: (6, 12, 18) at OS16, doubled at OS8, halved at OS32."""
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


def resolve_backbone(backbone, output_stride, multi_grid, backbone_weights, backbone_kwargs):
    """Returns (backbone_model, output_stride) from a name or an instance."""
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, keras.Model):
        own = getattr(backbone, "output_stride", None)
        if output_stride is not None and own is not None and output_stride != own:
            raise ValueError(
                f"output_stride={output_stride} disagrees with the given backbone's output "
                f"stride {own}; build the backbone with output_stride={output_stride}."
            )
        output_stride = own if own is not None else output_stride
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


class SegmentationModel(keras.Model):
    """Base class: a functional model whose ``get_config`` returns its ctor arguments.

    Subclasses build the graph, call ``super().__init__(inputs, outputs)`` and then
    ``self._set_config(...)`` with every constructor argument under its own name.
    ``backbone_weights`` is stored as None: the weights travel in the ``.keras`` file,
    and reloading must not download ImageNet weights again.
    """

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
        config = {"name": self.name, "trainable": self.trainable}
        config.update(self._kd_config)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def backbone(self):
        """The backbone sub-model (looked up, not stored, so weights are saved once)."""
        return self.get_layer(self._backbone_name)

    @property
    def num_classes(self):
        return self._kd_config["num_classes"]

    # --- augmentation on the accelerator (`augment_on="device"`) ---------------------------

    def set_augmentation(self, augmentation):
        """Applies `augmentation` (a `kd.data.SegmentationAugmentation`) to every training
        batch that carries ``"augment_params"`` (pipelines built with ``augment_on="device"``),
        inside the train step, on the accelerator. Pass None to detach it.

        The layer is kept out of the model's tracked layers: it has no weights to save, and
        the model's ``.keras`` file and checkpoints stay the same with or without it.
        """
        if augmentation is not None and not callable(augmentation):
            raise TypeError(f"Expected a kd.data.SegmentationAugmentation or None; got "
                            f"{augmentation!r}.")
        object.__setattr__(self, "_kd_augmentation", augmentation)
        self.train_function = None  # the compiled train step changes: rebuild it

    @property
    def augmentation(self):
        return getattr(self, "_kd_augmentation", None)

    def _augment_batch(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        if not (isinstance(x, dict) and AUGMENT_PARAMS in x):
            return data
        if self.augmentation is None:
            raise ValueError(
                "This batch holds full-size images with 'augment_params' (a pipeline built "
                "with augment_on='device'), but the model has no augmentation attached; call "
                "model.set_augmentation(kd.data.SegmentationAugmentation(crop_size, augment)) "
                "or build the pipeline with augment_on='data'.")
        return self.augmentation(data)

    def train_step(self, *args):
        # TF and torch call train_step(data); JAX calls train_step(state, data).
        *state, data = args
        return super().train_step(*state, self._augment_batch(data))

    def __call__(self, inputs, *args, **kwargs):
        # Keras builds losses and metrics from the first batch's structure before the first
        # train step; for an `augment_on="device"` batch, that is the images under the dict.
        if isinstance(inputs, dict) and AUGMENT_PARAMS in inputs:
            inputs = inputs["images"]
        return super().__call__(inputs, *args, **kwargs)
