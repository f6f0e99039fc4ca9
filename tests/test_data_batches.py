"""The one batch-unpacking helper: every batch form the package accepts, NumPy and tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.data import batches
from keras_deeplab.utils import AUGMENT_PARAMS

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 255, (2, 4, 5, 3)).astype(np.float32)
Y = RNG.integers(0, 3, (2, 4, 5, 1)).astype(np.int32)
P = RNG.uniform(size=(2, 7)).astype(np.float32)


def test_every_form_unpacks_to_the_same_arrays():
    forms = {
        "dict": ({"images": X, "segmentation_masks": Y}, "dict", None),
        "dict+params": ({"images": X, "segmentation_masks": Y, AUGMENT_PARAMS: P}, "dict", P),
        "tuple": ((X, Y), "tuple", None),
        "list": ([X, Y], "tuple", None),
        "tuple+params": (({"images": X, AUGMENT_PARAMS: P}, Y), "tuple", P),
        "aux targets": ((X, {"logits": Y, "aux_logits": Y}), "tuple", None),
    }
    for name, (batch, kind, params) in forms.items():
        x, y = batches.split_batch(batch)
        assert x is X and y is Y, name
        unpacked = batches.unpack_batch(batch)
        assert unpacked.kind == kind and unpacked.params is params and unpacked.rest == (), name
    # auxiliary targets stay a dict in unpack_batch (the augmentation crops them all)
    assert set(batches.unpack_batch((X, {"logits": Y, "aux_logits": Y})).masks) == {
        "logits", "aux_logits"}
    # Keras' sample weights are kept apart, not taken for masks
    weights = np.ones((2,), np.float32)
    unpacked = batches.unpack_batch((X, Y, weights))
    assert unpacked.masks is Y and unpacked.rest == (weights,)


def test_partial_and_bare_batches():
    assert batches.split_batch((X,)) == (X, None)
    assert batches.split_batch({"images": X}) == (X, None)
    assert batches.split_batch({"segmentation_masks": Y}) == (None, Y)
    assert batches.split_batch(Y) == (None, Y)  # default: a bare array is masks
    assert batches.split_batch(X, bare="images") == (X, None)
    with pytest.raises(ValueError, match="keys \\['x'\\]"):
        batches.split_batch({"x": X})
    with pytest.raises(ValueError, match="empty tuple"):
        batches.split_batch(())
    with pytest.raises(ValueError, match="bare"):
        batches.split_batch(X, bare="labels")


def test_iterate_batches_reads_tf_data_and_iterables():
    ds = tf.data.Dataset.from_tensor_slices({"images": X, "segmentation_masks": Y}).batch(1)
    got = list(batches.iterate_batches(ds))
    assert len(got) == 2
    for i, (x, y) in enumerate(got):
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        np.testing.assert_array_equal(x, X[i:i + 1])
        np.testing.assert_array_equal(y, Y[i:i + 1])
    tensors = [(tf.constant(X), tf.constant(Y))] * 3
    got = list(batches.iterate_batches(tensors, max_batches=2))
    assert len(got) == 2 and isinstance(got[0][0], np.ndarray)
    np.testing.assert_array_equal(got[1][1], Y)
    images_only = list(batches.iterate_batches([X], bare="images"))
    assert images_only[0][1] is None and images_only[0][0] is X


def test_dataset_length():
    ds = tf.data.Dataset.range(10).batch(3)
    assert batches.dataset_length(ds) == 4
    assert batches.dataset_length([1, 2]) == 2
    assert batches.dataset_length(ds.repeat()) is None  # infinite
    assert batches.dataset_length(ds.filter(lambda v: True)) is None  # unknown
    assert batches.dataset_length(iter([1])) is None


def test_iterate_masks_squeezes_and_checks():
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(2)
    (masks,) = list(batches.iterate_masks(ds, progress=False))
    assert masks.dtype == np.int64 and masks.shape == (2, 4, 5)
    np.testing.assert_array_equal(masks, Y[..., 0])
    (single,) = list(batches.iterate_masks([Y[0, ..., 0]], progress=False))  # bare (H, W)
    assert single.shape == (1, 4, 5)
    with pytest.raises(ValueError, match="no segmentation masks"):
        list(batches.iterate_masks([(X,)], progress=False))


def test_take_images_from_every_form():
    # reference: the same images / masks sliced by hand
    for data in ({"images": X, "segmentation_masks": Y}, (X, Y),
                 tf.data.Dataset.from_tensor_slices((X, Y)).batch(1)):
        images, labels = batches.take_images(data, 5)
        assert len(images) == 2 and all(i.dtype == np.float32 for i in images)
        np.testing.assert_array_equal(np.stack(images), X)
        np.testing.assert_array_equal(np.stack(labels), Y[..., 0])
    images, labels = batches.take_images(X, 1)
    assert len(images) == 1 and labels is None
    sizes = [np.zeros((4, 5, 3)), np.zeros((6, 7, 3))]  # a list of images of several sizes
    images, labels = batches.take_images(sizes, 5)
    assert [i.shape for i in images] == [(4, 5, 3), (6, 7, 3)] and labels is None
    assert batches.take_images(None, 3) == ([], None)
    with pytest.raises(ValueError, match="no images"):
        batches.take_images([], 3)
