"""Callback: write input images, ground truth and predicted masks to TensorBoard."""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from keras_deeplab.training._data import iterate_batches
from keras_deeplab.training._utils import main_logits


def color_palette(num_colors=256):
    """The PASCAL VOC colour map (bit-interleaved), uint8 (num_colors, 3); 255 maps to white."""
    palette = np.zeros((num_colors, 3), np.uint8)
    for i in range(num_colors):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    if num_colors > 255:
        palette[255] = (255, 255, 255)
    return palette


def colorize(mask, palette=None):
    """(…, H, W) integer mask -> (…, H, W, 3) uint8 RGB."""
    palette = color_palette() if palette is None else np.asarray(palette, np.uint8)
    mask = np.asarray(mask).astype(np.int64)
    return palette[np.clip(mask, 0, len(palette) - 1)]


class TensorBoardMasks(keras.callbacks.Callback):
    """Writes image / ground-truth / prediction panels to TensorBoard every N epochs.

    Use it next to `keras.callbacks.TensorBoard(log_dir)`; the panels go to
    ``<log_dir>/masks`` under the tag "predictions" (one row per image:
    input | ground truth | prediction, VOC colour map, ignore label in white).

    Args:
        log_dir: str. TensorBoard log directory.
        data: dataset or iterable of `{"images", "segmentation_masks"}` / `(images, masks)`;
            only the first `max_images` images are used.
        max_images: int. Number of images shown. Defaults to 3.
        every_n_epochs: int. Defaults to 1.
        palette: optional (N, 3) uint8 colour map (e.g. the Cityscapes colours).

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
        pred = colorize(np.asarray(logits).argmax(-1), self.palette)
        image = np.clip(self.images, 0, 255).astype(np.uint8)
        truth = (colorize(self.masks, self.palette) if self.masks is not None
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
