"""Opt-in augmentation on the accelerator: a model wrapper whose train step augments.

Pipelines built with ``augment_on="device"`` yield full-size training batches
``({"images", "augment_params"}, masks)``: the random numbers are drawn in ``tf.data``, the
resize / rotate / pad / crop / flip / photometric work is left to the accelerator. Plain
segmentation models know nothing of that batch format; `DeviceAugmentedModel` wraps one
and applies a `keras_deeplab.data.SegmentationAugmentation` inside its train step.
"""

import keras

from keras_deeplab.utils import AUGMENT_PARAMS, register


def _carries_params(data):
    x = data[0] if isinstance(data, (tuple, list)) else data
    return isinstance(x, dict) and AUGMENT_PARAMS in x


@register
class DeviceAugmentedModel(keras.Model):
    """Trains ``model`` on batches augmented inside the train step (``augment_on="device"``).

    ``train_step`` applies ``augmentation`` to every batch that carries
    ``"augment_params"`` (other batches pass unchanged), then runs the usual Keras step on
    the wrapped model, on every backend (TensorFlow, JAX, PyTorch) and under
    ``tf.distribute`` strategies (each replica augments its own slice of the batch).
    ``call``, ``predict`` and ``evaluate`` take plain images and delegate to ``model``.

    The wrapper holds no weights of its own: its trainable weights are ``model``'s.
    ``save()`` writes ``model`` (so ``.keras`` checkpoints, e.g. ``best.keras`` /
    ``last.keras`` of `kd.training.fit`, reload as the segmentation model, without the
    augmentation); keep ``wrapper.model`` for export and inference.

    Args:
        model: keras.Model. The segmentation model (float RGB images in, logits out).
        augmentation: `keras_deeplab.data.SegmentationAugmentation`. Crop size and
            augmentation settings of the training batches.

    Raises:
        TypeError: if ``model`` is not a Keras model or ``augmentation`` is not callable.

    Example:
    ```python
    train = kd.data.pascal_voc(root, "train_aug", crop_size=513, training=True,
                               augment_on="device", output="tuple")
    trainer = kd.training.DeviceAugmentedModel(
        model, kd.data.SegmentationAugmentation(crop_size=513))
    trainer.compile(optimizer=..., loss=kd.losses.CrossEntropy())
    trainer.fit(train, epochs=...)
    model.save("model.keras")   # the same weights: trainer.model is model
    ```
    """

    def __init__(self, model, augmentation, **kwargs):
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        if isinstance(augmentation, dict):
            augmentation = keras.saving.deserialize_keras_object(augmentation)
        if not isinstance(model, keras.Model):
            raise TypeError(f"DeviceAugmentedModel(model=...) needs a keras.Model; got "
                            f"{type(model).__name__}.")
        if not callable(augmentation):
            raise TypeError("DeviceAugmentedModel(augmentation=...) needs a "
                            "kd.data.SegmentationAugmentation; got "
                            f"{type(augmentation).__name__}.")
        kwargs.setdefault("name", f"{model.name}_device_augmented")
        super().__init__(**kwargs)
        self.model = model
        self.augmentation = augmentation
        # No weights of its own: built when the wrapped model is (kd.training.fit's
        # BackupAndRestore refuses an unbuilt model).
        self.built = bool(model.built)

    @property
    def num_classes(self):
        """``model.num_classes`` (None when the wrapped model has no such attribute)."""
        return getattr(self.model, "num_classes", None)

    def augment(self, data):
        """Returns ``data`` with ``augmentation`` applied if it carries augment params."""
        return self.augmentation(data) if _carries_params(data) else data

    def train_step(self, *args):
        # TensorFlow and PyTorch call train_step(data); JAX calls train_step(state, data).
        *state, data = args
        return super().train_step(*state, self.augment(data))

    def call(self, inputs, training=None):
        # Keras builds compiled losses and metrics from the first batch before the first
        # train step; for an augment_on="device" batch its inputs are the dict: use the images.
        if isinstance(inputs, dict) and AUGMENT_PARAMS in inputs:
            inputs = inputs["images"]
        return self.model(inputs, training=training)

    def save(self, filepath, *args, **kwargs):
        """Saves the wrapped segmentation model (not the wrapper) to ``filepath``."""
        return self.model.save(filepath, *args, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "model": keras.saving.serialize_keras_object(self.model),
                "augmentation": keras.saving.serialize_keras_object(self.augmentation)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


__all__ = ["DeviceAugmentedModel"]
