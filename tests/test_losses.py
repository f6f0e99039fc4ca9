"""Losses checked against independent NumPy references (Berman et al.'s Lovasz algorithm ported)."""

import math

import keras
import numpy as np
import pytest

from keras_deeplab.training import losses

IGNORE = 255


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _data(seed=0, b=2, h=9, w=7, c=5, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, (b, h, w, 1)).astype(np.int32)
    labels[rng.random(labels.shape) < ignore_frac] = IGNORE
    logits = (2.0 * rng.standard_normal((b, h, w, c))).astype(np.float32)
    return labels, logits


# ---------------------------------------------------------------- NumPy references

def np_cross_entropy(labels, logits, weights=None):
    y = labels[..., 0].reshape(-1)
    p = _softmax(logits.astype(np.float64)).reshape(-1, logits.shape[-1])
    valid = y != IGNORE
    ce = -np.log(p[valid, y[valid]])
    w = np.ones_like(ce) if weights is None else np.asarray(weights)[y[valid]]
    return (ce * w).sum() / w.sum()


def np_dice(labels, logits, smooth=1.0, classes="present"):
    c = logits.shape[-1]
    y = labels[..., 0].reshape(-1)
    p = _softmax(logits.astype(np.float64)).reshape(-1, c)
    valid = y != IGNORE
    y, p = y[valid], p[valid]
    dices, present = [], []
    for k in range(c):
        g = (y == k).astype(np.float64)
        inter = (p[:, k] * g).sum()
        dices.append((2 * inter + smooth) / (p[:, k].sum() + g.sum() + smooth))
        present.append(g.sum() > 0)
    dices = np.array(dices)
    if classes == "all":
        return 1 - dices.mean()
    return 1 - dices[np.array(present)].mean()


def np_lovasz_grad(gt_sorted):
    # Port of lovasz_grad from github.com/bermanmaxim/LovaszSoftmax (pytorch/lovasz_losses.py)
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def np_lovasz_softmax_flat(probas, labels, classes="present"):
    # Port of lovasz_softmax_flat (same repository); probas (P, C), labels (P,)
    if probas.size == 0:
        return 0.0
    C = probas.shape[1]
    out = []
    for c in range(C):
        fg = (labels == c).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = np.abs(fg - probas[:, c])
        perm = np.argsort(-errors, kind="stable")
        out.append(np.dot(errors[perm], np_lovasz_grad(fg[perm])))
    return np.mean(out)


def np_lovasz(labels, logits, classes="present", per_image=False):
    probs = _softmax(logits.astype(np.float64))
    y = labels[..., 0]

    def flat(p, lab):
        p = p.reshape(-1, p.shape[-1])
        lab = lab.reshape(-1)
        valid = lab != IGNORE  # flatten_probas in the reference drops ignored pixels
        return np_lovasz_softmax_flat(p[valid], lab[valid], classes)

    if per_image:
        return np.mean([flat(probs[i], y[i]) for i in range(len(y))])
    return flat(probs, y)


def np_ohem(labels, logits, threshold, min_kept):
    y = labels[..., 0].reshape(-1)
    p = _softmax(logits.astype(np.float64)).reshape(-1, logits.shape[-1])
    valid = y != IGNORE
    prob_true = p[valid, y[valid]]
    ce = -np.log(prob_true)
    # mmsegmentation OHEMPixelSampler rule
    sorted_prob = np.sort(prob_true)
    kth_prob = sorted_prob[min(min_kept, len(sorted_prob)) - 1]
    thr = max(kth_prob, threshold)
    keep = prob_true <= thr
    return ce[keep].mean()


# ---------------------------------------------------------------- tests

def test_cross_entropy_matches_keras_and_numpy():
    labels, logits = _data()
    ours = float(losses.CrossEntropy()(labels, logits))
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    np.testing.assert_allclose(ours, float(keras_ce(labels, logits)), rtol=1e-5)
    np.testing.assert_allclose(ours, np_cross_entropy(labels, logits), rtol=1e-5)


def test_weighted_cross_entropy():
    labels, logits = _data(seed=1)
    w = [0.5, 2.0, 1.0, 3.0, 0.1]
    ours = float(losses.CrossEntropy(class_weights=w)(labels, logits))
    np.testing.assert_allclose(ours, np_cross_entropy(labels, logits, w), rtol=1e-5)


def test_all_ignored_gives_zero_not_nan():
    labels, logits = _data()
    labels[:] = IGNORE
    for loss in (losses.CrossEntropy(), losses.DiceLoss(), losses.LovaszSoftmax(),
                 losses.OHEMCrossEntropy(min_kept=4)):
        assert float(loss(labels, logits)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("classes", ["present", "all"])
def test_dice_matches_numpy(classes):
    labels, logits = _data(seed=2)
    labels[labels == 3] = 0  # make class 3 absent
    ours = float(losses.DiceLoss(classes=classes)(labels, logits))
    np.testing.assert_allclose(ours, np_dice(labels, logits, classes=classes), rtol=1e-5)


@pytest.mark.parametrize("classes,per_image", [("present", False), ("all", False),
                                               ("present", True)])
def test_lovasz_matches_reference(classes, per_image):
    labels, logits = _data(seed=3)
    labels[labels == 4] = 1  # an absent class
    loss = losses.LovaszSoftmax(classes=classes, per_image=per_image)
    np.testing.assert_allclose(float(loss(labels, logits)),
                               np_lovasz(labels, logits, classes, per_image), rtol=1e-5)


def test_lovasz_is_zero_for_perfect_prediction():
    labels, _ = _data(seed=4, ignore_frac=0.0)
    logits = 50.0 * np.eye(5, dtype=np.float32)[labels[..., 0]]
    assert float(losses.LovaszSoftmax()(labels, logits)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("threshold,min_kept", [(0.7, 10), (0.7, 1000), (0.3, 5)])
def test_ohem_matches_mmseg_rule(threshold, min_kept):
    labels, logits = _data(seed=5, h=16, w=16)
    loss = losses.OHEMCrossEntropy(threshold=threshold, min_kept=min_kept)
    np.testing.assert_allclose(float(loss(labels, logits)),
                               np_ohem(labels, logits, threshold, min_kept), rtol=1e-5)


def test_aux_dict_outputs():
    labels, logits = _data(seed=6)
    _, aux = _data(seed=7)
    loss = losses.CrossEntropy(aux_weight=0.4)
    value = float(loss(labels, {"logits": logits, "aux_logits": aux}))
    expected = np_cross_entropy(labels, logits) + 0.4 * np_cross_entropy(labels, aux)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_float16_logits_computed_in_float32():
    labels, logits = _data(seed=8)
    value = losses.CrossEntropy()(labels, logits.astype(np.float16))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    np.testing.assert_allclose(float(value), np_cross_entropy(labels, logits), rtol=2e-3)


@pytest.mark.parametrize("loss", [
    losses.CrossEntropy(class_weights=[1.0, 2.0, 3.0, 4.0, 5.0], label_smoothing=0.1),
    losses.DiceLoss(smooth=0.5, classes="all"),
    losses.LovaszSoftmax(per_image=True),
    losses.OHEMCrossEntropy(threshold=0.6, min_kept=7),
])
def test_config_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    labels, logits = _data(seed=9)
    np.testing.assert_allclose(float(restored(labels, logits)), float(loss(labels, logits)),
                               rtol=1e-6)


def test_losses_train_a_model():
    """Every loss gives finite gradients through model.fit (graph mode)."""
    labels, _ = _data(seed=10, b=4, h=8, w=8)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    for loss in (losses.CrossEntropy(), losses.DiceLoss(), losses.LovaszSoftmax(),
                 losses.OHEMCrossEntropy(min_kept=20)):
        model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255.0),
                                  keras.layers.Conv2D(5, 3, padding="same")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        history = model.fit(images, labels, batch_size=2, epochs=2, verbose=0)
        assert all(np.isfinite(history.history["loss"])), loss.name


def test_class_weights_median_frequency():
    rng = np.random.default_rng(11)
    masks = rng.choice([0, 1, 2, IGNORE], p=[0.6, 0.3, 0.05, 0.05], size=(6, 10, 10, 1))
    masks[:3][masks[:3] == 2] = 0  # class 2 only in the last three images
    counts = np.zeros(4)
    image_pixels = np.zeros(4)
    for m in masks:
        m = m[m != IGNORE]
        for c in range(4):
            n = (m == c).sum()
            counts[c] += n
            image_pixels[c] += m.size if n else 0
    freq = counts[:3] / image_pixels[:3]
    expected = np.append(np.median(freq) / freq, 0.0)
    with pytest.warns(UserWarning, match=r"\[3\]"):
        weights = losses.compute_class_weights(
            [{"segmentation_masks": masks[:4]}, {"segmentation_masks": masks[4:]}],
            num_classes=4, progress=False)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    enet = losses.class_weights_from_counts(counts[:3], method="enet")
    np.testing.assert_allclose(enet, 1 / np.log(1.02 + counts[:3] / counts[:3].sum()), rtol=1e-6)


def test_class_weights_errors():
    with pytest.raises(ValueError, match="neither a class id"):
        losses.compute_class_weights([np.full((1, 4, 4, 1), 7)], num_classes=3, progress=False)
    with pytest.raises(ValueError, match="no masks"):
        losses.compute_class_weights([], num_classes=3, progress=False)
    with pytest.raises(ValueError, match="Unknown class-weight method"):
        losses.compute_class_weights([], num_classes=3, method="bogus")
    assert math.isfinite(float(losses.CrossEntropy()(np.zeros((1, 2, 2, 1)),
                                                      np.zeros((1, 2, 2, 3), "float32"))))
