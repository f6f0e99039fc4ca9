"""The one palette module: VOC devkit colours, Cityscapes colours, one ignore colour, PIL."""

import numpy as np
import pytest
from PIL import Image

import keras_deeplab as kd
from keras_deeplab.data import palette

# Colours of the PASCAL VOC devkit (VOClabelcolormap.m), as listed in the VOC2012 docs and
# read from its SegmentationClass PNGs: class id -> RGB.
VOC_DEVKIT = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
              5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0),
              9: (192, 0, 0), 12: (64, 0, 128), 15: (192, 128, 128), 20: (0, 64, 128),
              255: (224, 224, 192)}


def test_voc_colormap_matches_the_devkit():
    cmap = palette.voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    for class_id, rgb in VOC_DEVKIT.items():
        assert tuple(cmap[class_id]) == rgb, class_id
    assert len({tuple(c) for c in cmap}) == 256  # every id its own colour
    np.testing.assert_array_equal(palette.VOC_PALETTE, cmap[:21])
    with pytest.raises(ValueError, match=r"\[1, 256\]"):
        palette.voc_colormap(257)


def test_cityscapes_palette_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    train = sorted((lb.trainId, lb.color) for lb in labels if 0 <= lb.trainId < 255)
    np.testing.assert_array_equal(palette.CITYSCAPES_PALETTE, [c for _, c in train])


def test_one_ignore_colour_for_every_palette():
    labels = np.array([[0, 255], [1, 254]])
    custom = [(1, 2, 3), (4, 5, 6)]
    for name in ("cityscapes", "voc", "pascal_voc", custom):
        colours, ignore = palette.get_palette(name)
        assert tuple(ignore) == VOC_DEVKIT[255]
        out = palette.colorize(labels, name)
        assert tuple(out[0, 1]) == VOC_DEVKIT[255]  # label 255
        assert tuple(out[1, 1]) == VOC_DEVKIT[255]  # a label the palette has no colour for
        assert tuple(out[0, 0]) == tuple(colours[0]) and tuple(out[1, 0]) == tuple(colours[1])
    # the ignore colour is none of the class colours
    for colours in (palette.CITYSCAPES_PALETTE, palette.VOC_PALETTE):
        assert VOC_DEVKIT[255] not in {tuple(c) for c in colours}
    # a palette with 256 colours still draws 255 as ignore
    assert tuple(palette.colorize([[255]], palette.voc_colormap(256) // 2)[0, 0]) == (224, 224, 192)
    assert tuple(palette.colorize([[255]], "voc", ignore_color=(1, 1, 1))[0, 0]) == (1, 1, 1)


def test_colorize_batches_and_negative_labels_against_a_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(-2, 25, (2, 5, 7))
    labels[0, 0, 0] = 255
    out = palette.colorize(labels, "voc")
    assert out.shape == (2, 5, 7, 3) and out.dtype == np.uint8
    for idx in np.ndindex(labels.shape):
        c = int(labels[idx])
        expected = VOC_DEVKIT[255] if not 0 <= c < 21 else tuple(palette.voc_colormap()[c])
        assert tuple(out[idx]) == expected


def test_get_palette_errors_and_read_only_named_palettes():
    with pytest.raises(ValueError, match="Unknown palette"):
        palette.get_palette("rainbow")
    with pytest.raises(ValueError, match="19 colours"):
        palette.get_palette("cityscapes", num_classes=21)
    with pytest.raises(ValueError, match=r"\(r, g, b\) triples"):
        palette.get_palette([1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        palette.get_palette([(0, 0, 300)])
    colours, _ = palette.get_palette("voc")
    with pytest.raises(ValueError):
        colours[0] = 1  # the module's palettes cannot be changed through a caller


def test_overlay_against_numpy():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    colour = palette.colorize(rng.integers(0, 19, (4, 5)))
    expected = np.round(0.7 * image.astype(np.float64) + 0.3 * colour).astype(np.uint8)
    np.testing.assert_array_equal(palette.overlay(image, colour, alpha=0.3), expected)
    with pytest.raises(ValueError, match="alpha"):
        palette.overlay(image, colour, alpha=1.5)


def test_pil_palette_renders_like_colorize(tmp_path):
    labels = np.array([[0, 1, 15], [20, 255, 7]], np.uint8)
    for name in ("voc", "cityscapes"):
        png = Image.fromarray(labels, mode="P")
        png.putpalette(palette.pil_palette(name))
        png.save(tmp_path / "m.png")
        rgb = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
        np.testing.assert_array_equal(rgb, palette.colorize(labels, name))


def test_one_definition_shared_by_inference_and_tensorboard():
    # the Predictor's result colours and the TensorBoard panels come from data.palette
    from keras_deeplab.training import tensorboard_masks

    assert kd.inference.colorize is palette.colorize is kd.data.colorize
    assert tensorboard_masks.colorize is palette.colorize
    assert kd.inference.VOC_PALETTE is palette.VOC_PALETTE
    labels = np.array([[0, 13], [255, 18]])
    got = kd.inference.PredictionResult(
        image=np.zeros((2, 2, 3), np.uint8), labels=labels,
        probabilities=np.zeros((2, 2, 19), np.float32), palette="cityscapes").color()
    expected = [[(128, 64, 128), (0, 0, 142)], [VOC_DEVKIT[255], (119, 11, 32)]]
    np.testing.assert_array_equal(got, expected)  # road, car, ignore, bicycle
