"""Dense CRF wrapper and parameter search, checked against direct pydensecrf2 calls."""

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from pydensecrf.utils import unary_from_softmax

import keras_deeplab as kd
from keras_deeplab.inference import DenseCRF


def _direct_crf(image, probs, iterations, gsxy, gcompat, bsxy, bsrgb, bcompat):
    """The textbook pydensecrf2 call (pydensecrf README)."""
    h, w, c = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
    d.addPairwiseGaussian(sxy=gsxy, compat=gcompat)
    d.addPairwiseBilateral(sxy=bsxy, srgb=bsrgb, rgbim=np.ascontiguousarray(image), compat=bcompat)
    q = np.array(d.inference(iterations)).reshape(c, h, w)
    return q.transpose(1, 2, 0)


def _blurred_case(seed=0, size=64, num_classes=3):
    """Two objects with sharp colour edges; probabilities blurred and shifted across edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2] = 1
    labels[: size // 5, :] = 2 if num_classes > 2 else 1
    colours = np.array([(30, 90, 40), (200, 60, 50), (90, 140, 230)], np.float32)[:num_classes]
    image = colours[labels] + rng.normal(0, 6, (size, size, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    # Blurry network output: box-blur the one-hot map with a wide kernel, shift it.
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    k = 9
    pad = np.pad(onehot, ((k, k), (k, k), (0, 0)), mode="edge")
    csum = pad.cumsum(0).cumsum(1)
    blur = (
        csum[2 * k :, 2 * k :] - csum[: -2 * k, 2 * k :] - csum[2 * k :, : -2 * k]
        + csum[: -2 * k, : -2 * k]
    )[:size, :size]
    blur = np.roll(blur, 3, axis=1) + 0.05
    logits = 3.0 * np.log(blur / blur.sum(-1, keepdims=True))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return image, probs.astype(np.float32), labels


def _iou(pred, labels, num_classes):
    ious = []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (labels == c))
        union = np.sum((pred == c) | (labels == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_wrapper_equals_direct_pydensecrf_call():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    logits = rng.normal(0, 2, (37, 53, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs = probs.astype(np.float32)
    crf = DenseCRF(
        iterations=7, gaussian_sxy=2, gaussian_compat=5,
        bilateral_sxy=31, bilateral_srgb=9, bilateral_compat=6,
    )
    ref = _direct_crf(image, probs, 7, 2, 5, 31, 9, 6)
    got = crf.refine(image, probs)
    assert got.dtype == np.float32 and got.shape == probs.shape
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    # Defaults are the DeepLab v2 values: w2 = 3, sigma_gamma = 3, w1 = 4, sigma_alpha = 67, sigma_beta = 3.
    ref = _direct_crf(image, probs, 10, 3, 3, 67, 3, 4)
    np.testing.assert_array_equal(DenseCRF()(image, probs), ref.astype(np.float32))


def test_refinement_raises_iou_on_blurred_boundaries():
    for seed in range(3):
        image, probs, labels = _blurred_case(seed)
        before = _iou(probs.argmax(-1), labels, 3)
        refined = DenseCRF(bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=6).refine(
            image, probs
        )
        after = _iou(refined.argmax(-1), labels, 3)
        np.testing.assert_allclose(refined.sum(-1), 1.0, atol=1e-4)
        assert after > before + 0.03, (seed, before, after)


def test_refine_batch_pool_equals_sequential():
    cases = [_blurred_case(s, size=40 + 8 * s) for s in range(3)]
    crf = DenseCRF(iterations=5)
    images = [c[0] for c in cases]
    probs = [c[1] for c in cases]
    pooled = crf.refine_batch(images, probs, num_workers=2)
    for image, p, q in zip(images, probs, pooled):
        np.testing.assert_array_equal(q, crf.refine(image, p))
    with pytest.raises(ValueError, match="2 images but 3"):
        crf.refine_batch(images[:2], probs)


def test_fast_modes_stay_close_to_full_resolution():
    image, probs, labels = _blurred_case(1, size=96)
    full = DenseCRF(bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=6)
    q_full = full.refine(image, probs)
    half = DenseCRF(bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=6, scale=0.5)
    q_half = half.refine(image, probs)
    assert q_half.shape == q_full.shape
    np.testing.assert_allclose(q_half.sum(-1), 1.0, atol=1e-4)
    assert (q_half.argmax(-1) == q_full.argmax(-1)).mean() > 0.95
    assert _iou(q_half.argmax(-1), labels, 3) > _iou(probs.argmax(-1), labels, 3)

    # Label pruning: a 5-class map where classes 3, 4 are (almost) absent.
    probs5 = np.concatenate([probs * 0.999, np.full(probs.shape[:2] + (2,), 5e-4, np.float32)], -1)
    pruned = DenseCRF(
        bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=6, min_label_probability=0.01
    ).refine(image, probs5)
    assert np.all(pruned[..., 3:] == 0)
    full5 = full.refine(image, probs5)
    assert (pruned.argmax(-1) == full5.argmax(-1)).mean() > 0.99


def test_config_presets_and_errors():
    crf = DenseCRF(iterations=5, scale=0.5, min_label_probability=1e-3)
    assert DenseCRF.from_config(crf.get_config()) == crf
    v1 = DenseCRF.from_preset("deeplab_v1_largefov", iterations=5)
    assert (v1.bilateral_sxy, v1.bilateral_srgb, v1.bilateral_compat, v1.iterations) == (121, 5, 4, 5)
    with pytest.raises(ValueError, match="Unknown CRF preset"):
        DenseCRF.from_preset("nope")
    with pytest.raises(ValueError, match="scale"):
        DenseCRF(scale=1.5)
    with pytest.raises(ValueError, match="probabilities"):
        DenseCRF().refine(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 2), np.float32))


def test_crf_search_coarse_to_fine():
    cases = [_blurred_case(s, size=40) for s in range(2)]
    images = [c[0] for c in cases]
    probs = [c[1] for c in cases]
    labels = [c[2] for c in cases]
    labels[0][:2, :2] = 255  # ignored pixels
    result = kd.inference.crf_search(
        probs, images, labels,
        w1_values=(3, 6), sxy_values=(10, 30), srgb_values=(10,),
        fine_steps=(1.0, 5.0, 2.0),
        base_crf=DenseCRF(iterations=5),
        num_workers=2, progress=False, verbose=False,
    )
    # Baseline = NumPy mIoU over both images (confusion summed, 255 ignored).
    conf = np.zeros((3, 3))
    for p, lb in zip(probs, labels):
        keep = lb != 255
        np.add.at(conf, (lb[keep], p.argmax(-1)[keep]), 1)
    tp = np.diag(conf)
    assert result.baseline_miou == pytest.approx(np.mean(tp / (conf.sum(0) + conf.sum(1) - tp)))
    stages = [row["stage"] for row in result.table]
    assert stages.count("coarse") == 4 and stages.count("fine") >= 1
    assert result.best_miou == max(row["miou"] for row in result.table)
    assert result.best_miou > result.baseline_miou
    # The reported mIoU of the best setting is reproducible with its CRF.
    crf = result.best_crf()
    assert crf.iterations == 5
    conf = np.zeros((3, 3))
    for im, p, lb in zip(images, probs, labels):
        keep = lb != 255
        np.add.at(conf, (lb[keep], crf.refine(im, p).argmax(-1)[keep]), 1)
    tp = np.diag(conf)
    assert result.best_miou == pytest.approx(np.mean(tp / (conf.sum(0) + conf.sum(1) - tp)))
    assert "| coarse |" in result.to_markdown()
