"""The backbone contract: a `keras.Model` that maps images to a dict of features C2..C5.

Every model of the package reads its backbone through this contract only:

    images (B, H, W, 3), float RGB in [0, 255]
      -> backbone  {"C2": stride 4, "C3": stride 8, "C4": stride 16, "C5": stride 32}
         (nominal strides; strides beyond ``output_stride`` are replaced by dilation, so at
         output stride 16 C5 has stride 16 and at 8 both C4 and C5 have stride 8)
      -> ASPP neck (on C5) -> decoder (DeepLabv3+, with C2) -> classifier -> resize

The keys follow the field's naming (FPN, torchvision, Detectron2: ``C_i`` is the output of
the last block whose nominal stride is ``2**i``). ``feature_strides`` gives the effective
stride of each key at the backbone's output stride.

The module also holds the two construction rules shared by backbones and models:

- the dtype policy a model was built under is part of its config, and a model rebuilt from
  that config is built under the same policy (`dtype_policy_scope`);
- a model built inside a multi-replica ``tf.distribute`` strategy scope gets synchronized
  batch norm (`synchronize_batch_norm`), since per-replica statistics drift apart.
"""

import contextlib
import functools
import inspect

import keras

from keras_deeplab.utils import register

#: The standard feature keys, shallow to deep.
FEATURE_KEYS = ("C2", "C3", "C4", "C5")
#: Stride of each key when no stride is replaced by dilation (output stride 32).
NOMINAL_STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}


def feature_strides(output_stride):
    """Effective stride of each feature key at ``output_stride`` (8, 16 or 32).

    Example:
    >>> feature_strides(8)
    {'C2': 4, 'C3': 8, 'C4': 8, 'C5': 8}
    """
    return {key: min(stride, int(output_stride)) for key, stride in NOMINAL_STRIDES.items()}


@contextlib.contextmanager
def dtype_policy_scope(dtype):
    """Makes ``dtype`` (a policy name, serialized policy or `keras.DTypePolicy`) the global
    Keras dtype policy inside the block and restores the previous one after it.

    None leaves the current policy. Keras keeps the global policy per thread, so the scope
    does not leak into other threads.
    """
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def serialize_dtype_policy(layer):
    """The ``"dtype"`` entry of a config: the layer's policy, in Keras' serialized form."""
    return keras.dtype_policies.serialize(layer.dtype_policy)


def batch_norm_layers(model):
    """All `keras.layers.BatchNormalization` layers of a model, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def in_multi_replica_scope():
    """True inside the scope of a ``tf.distribute`` strategy with more than one replica
    (TensorFlow backend only; always False elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def synchronize_batch_norm(model, synchronized=True):
    """Sets ``synchronized`` on every BatchNormalization layer of ``model``; returns how many.

    Synchronized BN all-reduces the batch mean and variance across replicas (TensorFlow
    only). Weights are unchanged; the flag is saved in each layer's config.
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.synchronized = bool(synchronized)
    return len(layers)


def contract_init(init):
    """Wraps a backbone or model ``__init__`` with the two construction rules above.

    - ``dtype=`` (a keyword every Keras layer accepts, and what ``get_config`` stores): the
      graph is built under that policy, so ``from_config`` / ``.keras`` reload rebuild a
      ``mixed_bfloat16`` model as ``mixed_bfloat16`` whatever the global policy then is.
    - Built inside a multi-replica strategy scope: batch norm is synchronized
      (``kd.training.sync_batchnorm(model, False)`` turns it off again).
    """

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        dtype = kwargs.pop("dtype", None)
        with dtype_policy_scope(dtype):
            init(self, *args, **kwargs)
        if in_multi_replica_scope():
            synchronize_batch_norm(self)

    # Keras reads the constructor's signature (`Operation.__new__`): keep the original one.
    wrapped.__signature__ = inspect.signature(init)
    return wrapped


@register
class Backbone(keras.Model):
    """Base class of the backbones: a functional model ``images -> {"C2", .., "C5"}``.

    Subclasses build their graph, call ``super().__init__(inputs=, outputs=features)`` with
    ``features`` keyed by `FEATURE_KEYS`, then `_set_backbone_attributes(...)`, and return
    their constructor arguments from ``_backbone_config()``. The base class adds the name,
    ``trainable`` and the dtype policy to ``get_config()``, and builds subclasses under the
    ``dtype`` they are given (see `contract_init`).

    Feature keys and their effective strides (``feature_strides``):

    ======  =========  ====  ====  ====  ========================================
    key     nominal    OS32  OS16  OS8   ResNet / VGG16 / MobileNetV2 layer
    ======  =========  ====  ====  ====  ========================================
    ``C2``  4          4     4     4     conv2 out / block2 pool / block 2
    ``C3``  8          8     8     8     conv3 out / block3 pool / block 5
    ``C4``  16         16    16    8     conv4 out / block4 pool / block 12
    ``C5``  32         32    16    8     conv5 out / block5 pool / block 16
    ======  =========  ====  ====  ====  ========================================

    DeepLab reads C5 (ASPP), C2 (DeepLabv3+ decoder) and C4 (auxiliary head).

    Attributes:
        output_stride: int. 8, 16 or 32: input size / C5 size.
        feature_strides: dict. Key -> effective stride at ``output_stride``.
        image_shape: tuple. The ``input_shape`` argument, e.g. (None, None, 3).
        feature_keys: tuple. ("C2", "C3", "C4", "C5").
    """

    feature_keys = FEATURE_KEYS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = contract_init(cls.__dict__["__init__"])

    def _set_backbone_attributes(self, output_stride, image_shape):
        outputs = self._outputs_struct
        keys = tuple(outputs) if isinstance(outputs, dict) else ()
        missing = [key for key in FEATURE_KEYS if key not in keys]
        if missing:
            raise ValueError(f"{type(self).__name__} must output the feature keys "
                             f"{FEATURE_KEYS}; missing {missing}.")
        self.output_stride = int(output_stride)
        self.image_shape = tuple(image_shape)

    @property
    def feature_strides(self):
        return feature_strides(self.output_stride)

    def _backbone_config(self):
        raise NotImplementedError

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": serialize_dtype_policy(self)}
        config.update(self._backbone_config())
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


__all__ = [
    "Backbone",
    "FEATURE_KEYS",
    "NOMINAL_STRIDES",
    "batch_norm_layers",
    "dtype_policy_scope",
    "feature_strides",
    "in_multi_replica_scope",
    "synchronize_batch_norm",
]
