"""Callback: full evaluation (sliding window / multi-scale / flip) every N epochs."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_deeplab.evaluation.dataset import evaluate, format_iou_table
from keras_deeplab.utils import IGNORE_LABEL


class EvaluateMeanIoU(keras.callbacks.Callback):
    """Evaluates mean IoU on a validation set every N epochs and writes it into the logs.

    After an evaluated epoch the logs hold ``val_miou``, ``val_pixel_accuracy`` and one
    ``val_iou_<class>`` entry per class (NaN for a class absent from both labels and
    predictions), so `keras.callbacks.ModelCheckpoint(monitor="val_miou", mode="max")`,
    `EarlyStopping` and `History` see them. Put this callback *before* those in the list:
    Keras passes one logs dict through the callbacks in order.

    Unlike `model.evaluate` with `kd.metrics.MeanIoU`, this runs the model on full-resolution
    images with optional sliding windows (Cityscapes 2048x1024 with 769 crops), multi-scale
    and flip test-time augmentation, and prints a per-class table. It calls
    `kd.evaluation.evaluate`, so it scores the labels of the one prediction engine
    (`keras_deeplab.inference.engine`) that `kd.inference.Predictor` runs. A model wrapped in
    `kd.training.DeviceAugmentedModel` is evaluated through its segmentation model.

    Args:
        val_data: `tf.data.Dataset` or iterable of `{"images", "segmentation_masks"}` dicts or
            `(images, masks)` tuples.
        every_n_epochs: int. Evaluate after every N-th epoch (and always after the last one).
            Defaults to 1.
        sliding_window: None, int or (h, w). Crop size for sliding-window inference.
            Defaults to None (whole image).
        scales: sequence of float. Test scales. Defaults to (1.0,).
        flip: bool. Horizontal-flip test-time augmentation. Defaults to False.
        class_names: sequence of str or None. Names used in the logs and the table.
        num_classes: int or None. Defaults to the model's number of classes.
        ignore_class: int or None. Defaults to 255.
        overlap: float. Sliding-window overlap. Defaults to 1/3.
        output_stride: int or None. Evaluate at another output stride (same weights).
        max_batches: int or None. Evaluate only this many batches.
        prefix: str. Prefix of the log keys. Defaults to "val_".
        verbose: int. 1 prints the per-class table, 0 prints nothing. Defaults to 1.

    Example:
    ```python
    callbacks = [
        kd.callbacks.EvaluateMeanIoU(val_ds, every_n_epochs=5, sliding_window=769),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="val_miou", mode="max",
                                        save_best_only=True),
    ]
    model.fit(train_ds, epochs=50, callbacks=callbacks)
    ```
    """

    def __init__(self, val_data, every_n_epochs=1, sliding_window=None, scales=(1.0,),
                 flip=False, class_names=None, num_classes=None, ignore_class=IGNORE_LABEL,
                 overlap=1 / 3, output_stride=None, max_batches=None, prefix="val_", verbose=1):
        super().__init__()
        if hasattr(val_data, "__next__"):  # generators and iterators
            raise TypeError(
                "EvaluateMeanIoU needs a re-iterable validation set (a tf.data.Dataset or a "
                "list of batches); a generator or iterator would be exhausted after the first "
                "evaluation.")
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.val_data = val_data
        self.every_n_epochs = int(every_n_epochs)
        self.sliding_window = sliding_window
        self.scales = tuple(scales)
        self.flip = bool(flip)
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = num_classes
        self.ignore_class = ignore_class
        self.overlap = overlap
        self.output_stride = output_stride
        self.max_batches = max_batches
        self.prefix = prefix
        self.verbose = verbose
        self.history = []  # (epoch, results) for every evaluation
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None

    def _due(self, epoch):
        last = self._epochs is not None and epoch + 1 >= self._epochs
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def log_keys(self, num_classes):
        """Names of the per-class log entries, e.g. ``val_iou_road``."""
        names = self.class_names or [str(c) for c in range(num_classes)]
        return [f"{self.prefix}iou_{str(n).replace(' ', '_')}" for n in names]

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._due(epoch):
            return
        results = evaluate(_segmentation_model(self.model), self.val_data,
                           num_classes=self.num_classes,
                           ignore_class=self.ignore_class, sliding_window=self.sliding_window,
                           overlap=self.overlap, scales=self.scales, flip=self.flip,
                           output_stride=self.output_stride, class_names=self.class_names,
                           max_batches=self.max_batches, progress=self.verbose > 0)
        per_class = results["per_class_iou"]
        logs[f"{self.prefix}miou"] = results["mean_iou"]
        logs[f"{self.prefix}pixel_accuracy"] = results["pixel_accuracy"]
        for key, value in zip(self.log_keys(len(per_class)), per_class):
            logs[key] = float(value) if np.isfinite(value) else math.nan
        self.history.append((epoch, results))
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: validation on {results['num_images']} images")
            print(format_iou_table(per_class, self.class_names, results["mean_iou"],
                                   results["pixel_accuracy"]))


def _segmentation_model(model):
    """The model to evaluate: the segmentation model inside a `DeviceAugmentedModel`."""
    from keras_deeplab.training.device_augmentation import DeviceAugmentedModel

    return model.model if isinstance(model, DeviceAugmentedModel) else model
