"""Cityscapes through TensorFlow Datasets (`cityscapes/semantic_segmentation`, manual download).

TFDS cannot download Cityscapes: put `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip`
in `manual_dir`. TFDS stores labelIds; they are mapped to the 19 trainIds in the graph.
TFDS decodes its own (lossless, 8-bit) PNGs, which `keras_deeplab.data.decode` would decode to
the same pixels; the labelIds are checked to lie in 0..255 before the lookup.
"""

import tensorflow as tf

from keras_deeplab.data import pipeline as _pipeline
from keras_deeplab.data.cityscapes import LABEL_ID_TO_TRAIN_ID, NUM_CLASSES


class CityscapesTFDSSource:
    """Pipeline source over `tfds.load("cityscapes/semantic_segmentation")`.

    Args:
        split: str. TFDS split (`"train"`, `"validation"`, `"test"`, or slices).
        manual_dir: str or None. Folder holding the Cityscapes zip files.
        data_dir: str or None. TFDS data folder.
        config: str. TFDS config. Defaults to `"semantic_segmentation"`.
    """

    def __init__(self, split="train", manual_dir=None, data_dir=None,
                 config="semantic_segmentation"):
        import tensorflow_datasets as tfds

        builder = tfds.builder(f"cityscapes/{config}", data_dir=data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        self._ds = builder.as_dataset(split=split, shuffle_files=False)
        try:
            self._length = builder.info.splits[split].num_examples
        except KeyError:  # no split metadata (e.g. under tfds.testing.mock_data)
            self._length = None
        self.num_classes, self.name = NUM_CLASSES, f"tfds cityscapes/{config}:{split}"

    def __len__(self):
        if self._length is None:
            cardinality = int(self._ds.cardinality())
            self._length = cardinality if cardinality >= 0 else sum(1 for _ in self._ds)
        return self._length

    # labelId -> trainId, applied after the crop by `kd.data.make_pipeline`.
    mask_lookup = LABEL_ID_TO_TRAIN_ID

    def raw_dataset(self):
        """Examples with the masks still in labelIds."""
        def convert(ex):
            labels = tf.cast(ex["segmentation_label"], tf.int32)
            tf.debugging.assert_less(tf.reduce_max(labels), 256, message=(
                f"{self.name}: a segmentation_label holds values above 255, which are not "
                "Cityscapes labelIds; rebuild the TFDS dataset from the official zip files"))
            return {"images": tf.cast(ex["image_left"], tf.uint8),
                    "segmentation_masks": labels}

        return self._ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def dataset(self):
        """Examples with trainId masks."""
        return self.raw_dataset().map(lambda ex: _pipeline.lookup_masks(ex, self.mask_lookup),
                                      num_parallel_calls=tf.data.AUTOTUNE)


def cityscapes_tfds(split="train", manual_dir=None, data_dir=None, batch_size=8, training=None,
                    crop_size=769, output="dict", augment=None, **pipeline_kwargs):
    """Cityscapes (19 trainIds, 255 ignored) from TFDS.

    Args:
        split: str. Defaults to `"train"`.
        manual_dir: str or None. Folder with the manually downloaded zip files.
        data_dir: str or None. TFDS data folder.
        batch_size, training, crop_size, output, augment, **pipeline_kwargs: see
            `kd.data.cityscapes`.

    Example:

    ```python
    ds = kd.data.cityscapes_tfds("train", manual_dir="/downloads", batch_size=8)
    ```
    """
    training = split.startswith("train") if training is None else training
    return _pipeline.make_pipeline(CityscapesTFDSSource(split, manual_dir, data_dir),
                                   batch_size=batch_size, training=training,
                                   crop_size=crop_size, output=output, augment=augment,
                                   **pipeline_kwargs)
