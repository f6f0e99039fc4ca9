"""TFRecord round trip: what is read back equals what was written."""

import numpy as np
import pytest

import keras_deeplab as kd


def test_round_trip_sharded(tmp_path):
    images, masks = kd.data.synthetic_arrays("val", num_images=5, image_size=32)
    masks[0, :4, :4] = 255
    source = kd.data.ArraySource(images, masks, num_classes=6)
    paths = kd.data.write_tfrecords(source, str(tmp_path / "out" / "synth"), num_shards=2,
                                    progress=False)
    assert len(paths) == 2
    ds = kd.data.tfrecords(str(tmp_path / "out" / "synth-*"), num_classes=6, batch_size=5,
                           cache=False)
    batch = next(iter(ds))
    got_images, got_masks = batch["images"].numpy(), batch["segmentation_masks"].numpy()
    # shards are read in order: shard 0 holds examples 0, 2, 4 and shard 1 holds 1, 3
    order = [0, 2, 4, 1, 3]
    np.testing.assert_array_equal(got_images, images[order].astype(np.float32))
    np.testing.assert_array_equal(got_masks, masks[order])


def test_batched_tuple_dataset_and_missing_shards(tmp_path):
    ds = kd.data.synthetic("val", num_images=4, image_size=32, batch_size=2, output="tuple")
    kd.data.write_tfrecords(ds, str(tmp_path / "t"), progress=False)
    back = kd.data.tfrecords(str(tmp_path / "t-*"), num_classes=6, batch_size=4, output="tuple")
    x, y = next(iter(back))
    images, masks = kd.data.synthetic_arrays("val", num_images=4, image_size=32)
    np.testing.assert_array_equal(x.numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), masks)
    with pytest.raises(FileNotFoundError, match="No TFRecord shards"):
        kd.data.tfrecords(str(tmp_path / "none-*"), num_classes=6)
