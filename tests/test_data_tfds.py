"""kd.data.cityscapes_tfds with tfds.testing.mock_data (offline).

tensorflow-datasets is a dev extra (CI installs it): without it this module fails to import,
loudly, instead of skipping.
"""

import numpy as np
import tensorflow_datasets as tfds

import keras_deeplab as kd


def test_tfds_cityscapes_maps_label_ids(tmp_path):
    from cityscapesscripts.helpers.labels import id2label

    with tfds.testing.mock_data(num_examples=3):
        raw = tfds.load("cityscapes/semantic_segmentation", split="train")
        raw_masks = np.stack([ex["segmentation_label"].numpy() for ex in raw])
        raw_images = np.stack([ex["image_left"].numpy() for ex in raw])
        ds = kd.data.cityscapes_tfds("train", manual_dir=str(tmp_path), batch_size=3,
                                     training=False, cache=False)
        batch = next(iter(ds))
    lut = np.full(256, 255)
    for i, label in id2label.items():
        if 0 <= i < 256:
            lut[i] = label.trainId if 0 <= label.trainId < 255 else 255
    np.testing.assert_array_equal(batch["segmentation_masks"].numpy(), lut[raw_masks])
    np.testing.assert_array_equal(batch["images"].numpy(), raw_images.astype(np.float32))
