"""Callback: write input images, ground truth and predicted masks to TensorBoard."""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from keras_deeplab.data.batches import iterate_batches
from keras_deeplab.data.palette import colorize, default_palette, get_palette
from keras_deeplab.training._utils import main_logits


class TensorBoardMasks(keras.callbacks.Callback):
    """Writes image / ground-truth / prediction panels to TensorBoard every N epochs.

    Use it next to `keras.callbacks.TensorBoard(log_dir)`; the panels go to
    ``<log_dir>/masks`` under the tag "predictions" (one row per image:
    input | ground truth | prediction), coloured with `keras_deeplab.data.palette.colorize`
    (the ignore label 255 in `keras_deeplab.data.palette.IGNORE_COLOR`).

    Args:
        log_dir: str. TensorBoard log directory.
        data: dataset or iterable of `{"images", "segmentation_masks"}` / `(images, masks)`;
            only the first `max_images` images are used.
        max_images: int. Number of images shown. Defaults to 3.
        every_n_epochs: int. Defaults to 1.
        palette: palette name ("cityscapes", "voc") or (N, 3) colours, see
            `keras_deeplab.data.palette.get_palette`. Defaults to None: the model's
            palette, else `keras_deeplab.data.palette.default_palette` of its class count,
            the rule `kd.inference.Predictor` and ``keras-deeplab predict`` follow, so the
            panels and the predictions of one model share their colours.

    Example:
    ```python
    callbacks = [keras.callbacks.TensorBoard("runs/a"),
                 kd.callbacks.TensorBoardMasks("runs/a", val_ds)]
    ```
    """

    def __init__(self, log_dir, data, max_images=3, every_n_epochs=1, palette=None):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.max_images = int(max_images)
        self.every_n_epochs = int(every_n_epochs)
        self.palette = palette
        images, masks = [], []
        for x, y in iterate_batches(data):
            images.append(np.asarray(x, np.float32))
            masks.append(None if y is None else np.asarray(y))
            if sum(len(i) for i in images) >= self.max_images:
                break
        if not images:
            raise ValueError("TensorBoardMasks: the dataset yielded no images.")
        self.images = np.concatenate(images)[: self.max_images]
        self.masks = (None if masks[0] is None
                      else np.concatenate(masks)[: self.max_images].reshape(
                          self.images.shape[:3]))
        self._writer = None

    def panels(self):
        """uint8 (N, H, 3W, 3) panels for the current model."""
        logits = keras.ops.convert_to_numpy(main_logits(self.model.predict_on_batch(self.images)))
        logits = np.asarray(logits)
        palette = self.palette
        if palette is None:
            model = getattr(self.model, "model", self.model)  # DeviceAugmentedModel's inner
            palette = default_palette(logits.shape[-1], model)
        colours, _ = get_palette(palette, logits.shape[-1])
        pred = colorize(logits.argmax(-1), colours)
        image = np.clip(self.images, 0, 255).astype(np.uint8)
        truth = (colorize(self.masks, colours) if self.masks is not None
                 else np.zeros_like(image))
        return np.concatenate([image, truth, pred], axis=2)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        try:
            import tensorboard  # noqa: F401  (tf.summary.image needs it)
            import tensorflow as tf
        except ImportError:
            if not getattr(self, "_warned", False):
                warnings.warn("TensorBoardMasks: `pip install tensorboard` to log masks; "
                              "skipping.", stacklevel=2)
                self._warned = True
            return

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "masks"))
        with self._writer.as_default():
            tf.summary.image("predictions", self.panels(), step=epoch,
                             max_outputs=self.max_images)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
