"""The synthetic dataset and the tf.data pipeline: determinism, mask safety, alignment."""

import numpy as np
import pytest

import keras_deeplab as kd


def test_synthetic_arrays_are_deterministic_and_in_range():
    a_images, a_masks = kd.data.synthetic_arrays("val", num_images=6, image_size=48, seed=3)
    b_images, b_masks = kd.data.synthetic_arrays("val", num_images=6, image_size=48, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_masks, b_masks)
    assert a_images.dtype == np.uint8 and a_images.shape == (6, 48, 48, 3)
    assert a_masks.shape == (6, 48, 48, 1) and a_masks.max() < 6
    other, _ = kd.data.synthetic_arrays("train", num_images=6, image_size=48, seed=3)
    assert not np.array_equal(other, a_images)


def test_augmented_masks_hold_only_their_values_or_ignore():
    rng = np.random.default_rng(0)
    # Blocky masks (8x8 cells) so most pixels are away from an edge after resizing.
    cells = rng.choice([0, 2, 5], size=(8, 5, 6))
    masks = np.kron(cells, np.ones((8, 8), int))[:, :37, :41, None].astype("int32")
    # The image encodes the mask, so an augmented image/mask pair must stay aligned.
    images = np.repeat(masks * 40.0, 3, axis=-1).astype("float32")
    source = kd.data.ArraySource(images, masks, num_classes=6)
    ds = kd.data.make_pipeline(source, batch_size=4, training=True, crop_size=(33, 29),
                               augment={"min_scale": 0.5, "max_scale": 2.0, "scale_step": 0.25})
    for _ in range(3):
        for batch in ds:
            m = batch["segmentation_masks"].numpy()
            im = batch["images"].numpy()
            assert m.shape == (4, 33, 29, 1)
            assert set(np.unique(m)) <= {0, 2, 5, 255}
            inside = m[..., 0] != 255
            # Bilinear image resize blurs edges; away from edges the values agree exactly.
            agree = np.isclose(im[..., 0][inside], m[..., 0][inside] * 40.0, atol=1.0)
            assert agree.mean() > 0.8


def test_eval_mode_keeps_full_resolution_and_tuple_output():
    images, masks = kd.data.synthetic_arrays("test", num_images=3, image_size=40)
    ds = kd.data.synthetic("test", num_images=3, image_size=40, batch_size=2, training=False,
                           output="tuple")
    x, y = next(iter(ds))
    assert x.shape == (2, 40, 40, 3) and y.shape == (2, 40, 40, 1)
    np.testing.assert_array_equal(x.numpy(), images[:2].astype("float32"))
    np.testing.assert_array_equal(y.numpy(), masks[:2])


def test_bad_arrays_are_named():
    with pytest.raises(ValueError, match="neither a class id"):
        kd.data.ArraySource(np.zeros((1, 4, 4, 3)), np.full((1, 4, 4), 7), num_classes=6, name="mine")
    with pytest.raises(ValueError, match="RGB"):
        kd.data.ArraySource(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4)), num_classes=6)
    with pytest.raises(ValueError, match="differ in size"):
        kd.data.ArraySource(np.zeros((1, 4, 4, 3)), np.zeros((1, 5, 4)), num_classes=6)


def test_cache_auto_estimates_the_decoded_size(tmp_path, monkeypatch):
    from keras_deeplab.data import pipeline

    images, masks = kd.data.synthetic_arrays("val", num_images=4, image_size=32)
    source = kd.data.ArraySource(images, masks, num_classes=6)
    assert pipeline.estimated_bytes(source) == images.nbytes + masks.nbytes
    dirs = kd.data.write_synthetic(str(tmp_path / "s"), splits=("val",), num_images=4,
                                   image_size=32, progress=False)
    folder = kd.data.FolderSource(*dirs["val"], num_classes=6)
    # uint8 RGB image + int32 mask per pixel, times 4 examples
    assert pipeline.estimated_bytes(folder) == 4 * 32 * 32 * (3 + 4)
    assert pipeline._resolve_cache(source, "auto") is True
    monkeypatch.setattr(pipeline, "_physical_memory", lambda: 4 * pipeline.estimated_bytes(source) - 4)
    assert pipeline._resolve_cache(source, "auto") is False  # more than a quarter of the RAM
    # a path caches to files
    ds = kd.data.make_pipeline(source, batch_size=2, cache=str(tmp_path / "cache"))
    assert sum(1 for _ in ds) == 2 and any(p.name.startswith("cache") for p in tmp_path.iterdir())
