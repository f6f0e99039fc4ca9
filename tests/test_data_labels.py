"""The one Cityscapes/VOC label table, checked against cityscapesscripts and the VOC devkit."""

import importlib

import numpy as np

from keras_deeplab.data import labels

# the module (kd.data.cityscapes is the dataset function of the same name)
cityscapes = importlib.import_module("keras_deeplab.data.cityscapes")


def test_cityscapes_table_equals_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels as cs_labels

    evaluated = sorted((lb for lb in cs_labels if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
    assert [(c.name, c.label_id, c.train_id, c.color) for c in labels.CITYSCAPES_LABELS] == [
        (lb.name, lb.id, lb.trainId, lb.color) for lb in evaluated]
    assert labels.CITYSCAPES_CLASSES == tuple(lb.name for lb in evaluated)
    expected = np.full(256, 255)
    for lb in cs_labels:
        if lb.id >= 0:
            expected[lb.id] = lb.trainId if 0 <= lb.trainId < 255 else 255
    np.testing.assert_array_equal(labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID, expected)
    # the reader's lookup is that table, not a copy of it
    np.testing.assert_array_equal(cityscapes.LABEL_ID_TO_TRAIN_ID, expected)
    assert cityscapes.NUM_CLASSES == 19


def test_train_ids_to_label_ids_equals_cityscapesscripts():
    from cityscapesscripts.helpers.labels import trainId2label

    train_ids = np.array([[0, 5, 18], [255, -1, 19]])
    expected = [[trainId2label[0].id, trainId2label[5].id, trainId2label[18].id], [0, 0, 0]]
    np.testing.assert_array_equal(labels.train_ids_to_label_ids(train_ids), expected)


def test_voc_and_synthetic_class_names():
    # VOC devkit (VOCinit.m) order, background first
    voc = labels.class_names("pascal_voc")
    assert len(voc) == 21 and voc[0] == "background" and voc[1] == "aeroplane"
    assert voc[15] == "person" and voc[20] == "tvmonitor"
    assert labels.class_names("cityscapes")[13] == "car"
    from keras_deeplab.data.synthetic import CLASS_NAMES

    assert labels.class_names("synthetic", 3) == list(CLASS_NAMES[:3])
    assert labels.class_names("unknown") is None
