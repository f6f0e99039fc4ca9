"""Official Cityscapes scoring: ``kd.data.cityscapes`` + ``kd.training.evaluate`` equal
cityscapesscripts' pixel-level evaluation of the labelId PNGs the results writer produces."""

import glob
import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_deeplab as kd
from keras_deeplab.data.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_ID_TO_LABEL_ID,
    train_ids_to_label_ids,
)
from keras_deeplab.evaluation import cityscapes as cse


def test_writer_label_ids_match_cityscapesscripts():
    from cityscapesscripts.helpers.labels import trainId2label

    train_ids = np.array([[0, 5, 18], [255, 7, 13]])
    expected = [[trainId2label[t].id if t < 19 else 0 for t in row] for row in train_ids]
    np.testing.assert_array_equal(train_ids_to_label_ids(train_ids), expected)
    assert list(CITYSCAPES_CLASSES) == [trainId2label[t].name for t in range(19)]


def pointwise_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(19, 1)(x))


def make_fake_cityscapes(root, model, split="val", cities=("aachen", "bonn"), per_city=2,
                         size=(24, 40), seed=0):
    """Writes leftImg8bit + gtFine (labelIds, instanceIds) files in the official layout."""
    rng = np.random.default_rng(seed)
    for city in cities:
        img_dir = os.path.join(root, "leftImg8bit", split, city)
        gt_dir = os.path.join(root, "gtFine", split, city)
        os.makedirs(img_dir)
        os.makedirs(gt_dir)
        for k in range(per_city):
            stem = f"{city}_{k:06d}_{19 + k:06d}"
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            pred = model.predict(image[None].astype(np.float32), verbose=0)[0].argmax(-1)
            label_ids = CITYSCAPES_TRAIN_ID_TO_LABEL_ID[pred]
            noise = rng.random(size) < 0.3
            label_ids = np.where(noise, rng.choice([0, 1, 4, 7, 11, 24, 26, 33], size=size),
                                 label_ids).astype(np.uint8)
            label_ids[:3] = 0  # void rows
            label_ids[label_ids == 21] = 7  # vegetation never in the ground truth
            instance_ids = label_ids.astype(np.int32)
            for lid in (24, 26):  # person, car: two instances each
                mask = label_ids == lid
                inst = lid * 1000 + (np.arange(size[1])[None, :] >= size[1] // 2)
                instance_ids[mask] = np.broadcast_to(inst, size)[mask]
            Image.fromarray(image).save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
            Image.fromarray(label_ids, mode="L").save(
                os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"))
            Image.fromarray(instance_ids.astype(np.uint16)).save(
                os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"))
    return root


@pytest.mark.parametrize("instance_scores", [True, False])
def test_mean_iou_equals_cityscapesscripts(tmp_path, instance_scores):
    model = pointwise_model()
    data_dir = make_fake_cityscapes(str(tmp_path / "cityscapes"), model)
    val = kd.data.cityscapes(data_dir, "val", batch_size=2, training=False)
    ours = kd.training.evaluate(model, val, num_classes=19, progress=False)
    assert ours["num_images"] == 4
    out_dir = str(tmp_path / "results")
    written = cse.export_cityscapes_predictions(model, data_dir, out_dir, progress=False)
    assert len(written) == 4
    assert written[0] == os.path.join(out_dir, "aachen", "aachen_000000_000019_leftImg8bit.png")
    png = np.asarray(Image.open(written[0]))
    assert png.dtype == np.uint8 and png.ndim == 2
    assert set(np.unique(png)) <= set(CITYSCAPES_TRAIN_ID_TO_LABEL_ID.tolist())

    official = cse.cityscapes_official_evaluation(out_dir, data_dir, "val",
                                                  instance_scores=instance_scores)
    assert official["averageScoreClasses"] == pytest.approx(ours["mean_iou"], abs=1e-12)
    for k, name in enumerate(CITYSCAPES_CLASSES):
        theirs, mine = official["classScores"][name], ours["per_class_iou"][k]
        assert (np.isnan(theirs) and np.isnan(mine)) or theirs == pytest.approx(mine, abs=1e-12)
    assert np.isnan(ours["per_class_iou"][8]) or ours["per_class_iou"][8] == 0.0  # vegetation
    if instance_scores:
        assert np.isfinite(official["averageScoreInstClasses"])
    assert not hasattr(np, "in1d") or np.lib.NumpyVersion(np.__version__) < "2.4.0"

    from_files = cse.evaluate_cityscapes_predictions(out_dir, data_dir, "val")
    np.testing.assert_array_equal(from_files["confusion_matrix"][:, :19],
                                  ours["confusion_matrix"])
    assert from_files["confusion_matrix"][:, 19].sum() == 0


def test_non_evaluated_predictions_score_as_cityscapesscripts(tmp_path):
    # A prediction of a labelId that is not evaluated (0 "unlabeled", 4 "static") is a miss of
    # the true class and a false positive of none.
    model = pointwise_model()
    data_dir = make_fake_cityscapes(str(tmp_path / "cityscapes"), model)
    out_dir = str(tmp_path / "results")
    written = cse.export_cityscapes_predictions(model, data_dir, out_dir, progress=False)
    for k, path in enumerate(written[:2]):
        png = np.asarray(Image.open(path)).copy()
        png[5:12, 3:30] = (0, 4)[k]
        Image.fromarray(png, mode="L").save(path)
    official = cse.cityscapes_official_evaluation(out_dir, data_dir, "val", instance_scores=False)
    from_files = cse.evaluate_cityscapes_predictions(out_dir, data_dir, "val")
    assert from_files["confusion_matrix"][:, 19].sum() > 0
    assert official["averageScoreClasses"] == pytest.approx(from_files["mean_iou"], abs=1e-12)
    for k, name in enumerate(CITYSCAPES_CLASSES):
        theirs, mine = official["classScores"][name], from_files["per_class_iou"][k]
        assert (np.isnan(theirs) and np.isnan(mine)) or theirs == pytest.approx(mine, abs=1e-12)


def test_results_writer_writes_the_predictor_labels(tmp_path):
    # The writer runs the one engine: with a sliding window and flip, its PNGs hold the
    # labelIds of the Predictor's labels for the same settings.
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 5, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(19, 5, padding="same")(x))
    data_dir = make_fake_cityscapes(str(tmp_path / "cityscapes"), pointwise_model())
    settings = dict(sliding_window=16, overlap=0.5, flip=True)
    written = cse.export_cityscapes_predictions(model, data_dir, str(tmp_path / "o"),
                                                progress=False, **settings)
    predictor = kd.inference.Predictor(model, **settings)
    images = sorted(glob.glob(os.path.join(data_dir, "leftImg8bit", "val", "*", "*.png")))
    assert [os.path.basename(p) for p in written] == [os.path.basename(p) for p in images]
    for image_path, out in zip(images, written):
        labels = predictor(image_path)
        np.testing.assert_array_equal(np.asarray(Image.open(out)),
                                      CITYSCAPES_TRAIN_ID_TO_LABEL_ID[labels])


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        cse.export_cityscapes_predictions(pointwise_model(), str(tmp_path), str(tmp_path / "o"))
    small = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(5, 1)])
    with pytest.raises(ValueError, match="19-class"):
        cse.export_cityscapes_predictions(small, str(tmp_path), str(tmp_path / "o"))
