"""Dataset label tables: class names, Cityscapes labelId <-> trainId, colours' class order.

The one place the package knows what each class id of a public dataset means. Palettes
(`keras_deeplab.data.palette`) take their class order from here.

Sources:
    Cityscapes: ``cityscapesscripts/helpers/labels.py`` (Cordts et al., CVPR 2016). Of the
    34 labelIds, 19 are evaluated ("trainIds" 0..18); every other labelId maps to the
    ignore label 255 (tests compare this table with cityscapesscripts itself).
    PASCAL VOC 2012: the 20 object classes of the devkit plus background (class 0); 255
    marks object boundaries and "difficult" pixels.
    ADE20K (MIT SceneParsing benchmark, Zhou et al., CVPR 2017): 150 classes, ids 1..150 in
    the order of the benchmark's ``objectInfo150`` list (first name of each entry), plus id 0
    "other" (unlabeled pixels, which the benchmark and the TensorFlow DeepLab evaluation
    ignore). Order and names as in mmsegmentation ``mmseg/utils/class_names.py``
    ``ade_classes()`` (github.com/open-mmlab/mmsegmentation), with id 0 prepended.
"""

import collections

import numpy as np

from keras_deeplab.utils import IGNORE_LABEL

CityscapesClass = collections.namedtuple("CityscapesClass", ["name", "label_id", "train_id", "color"])

#: The 19 evaluated Cityscapes classes, in trainId order (name, labelId, trainId, RGB colour).
CITYSCAPES_LABELS = (
    CityscapesClass("road", 7, 0, (128, 64, 128)),
    CityscapesClass("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesClass("building", 11, 2, (70, 70, 70)),
    CityscapesClass("wall", 12, 3, (102, 102, 156)),
    CityscapesClass("fence", 13, 4, (190, 153, 153)),
    CityscapesClass("pole", 17, 5, (153, 153, 153)),
    CityscapesClass("traffic light", 19, 6, (250, 170, 30)),
    CityscapesClass("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesClass("vegetation", 21, 8, (107, 142, 35)),
    CityscapesClass("terrain", 22, 9, (152, 251, 152)),
    CityscapesClass("sky", 23, 10, (70, 130, 180)),
    CityscapesClass("person", 24, 11, (220, 20, 60)),
    CityscapesClass("rider", 25, 12, (255, 0, 0)),
    CityscapesClass("car", 26, 13, (0, 0, 142)),
    CityscapesClass("truck", 27, 14, (0, 0, 70)),
    CityscapesClass("bus", 28, 15, (0, 60, 100)),
    CityscapesClass("train", 31, 16, (0, 80, 100)),
    CityscapesClass("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesClass("bicycle", 33, 18, (119, 11, 32)),
)

CITYSCAPES_NUM_CLASSES = len(CITYSCAPES_LABELS)

#: Class names of the 19 Cityscapes trainIds.
CITYSCAPES_CLASSES = tuple(c.name for c in CITYSCAPES_LABELS)

#: uint8 (19,): trainId -> labelId (what the Cityscapes benchmark expects in result PNGs).
CITYSCAPES_TRAIN_ID_TO_LABEL_ID = np.array([c.label_id for c in CITYSCAPES_LABELS], np.uint8)

#: uint8 (256,): labelId -> trainId lookup table; labelIds not evaluated map to 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, np.uint8)
CITYSCAPES_LABEL_ID_TO_TRAIN_ID[CITYSCAPES_TRAIN_ID_TO_LABEL_ID] = np.arange(
    CITYSCAPES_NUM_CLASSES, dtype=np.uint8)

#: RGB colours of the 19 trainIds (cityscapesscripts' colours), uint8 (19, 3).
CITYSCAPES_COLORS = np.array([c.color for c in CITYSCAPES_LABELS], np.uint8)

#: PASCAL VOC 2012 class names, class id order (0 = background).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

VOC_NUM_CLASSES = len(VOC_CLASSES)

#: ADE20K SceneParsing class names, class id order: 0 = "other" (unlabeled, ignored by the
#: benchmark), 1..150 the objectInfo150 classes (151 names; see the module docstring).
ADE20K_CLASSES = (
    "other", "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

ADE20K_NUM_CLASSES = len(ADE20K_CLASSES)


def train_ids_to_label_ids(train_ids):
    """Maps Cityscapes trainIds to labelIds (for result PNGs and the official scripts).

    Args:
        train_ids: integer array, values in [0, 19); anything else (e.g. 255) becomes
            labelId 0 ("unlabeled"), which the benchmark ignores.

    Returns:
        uint8 array of the same shape.
    """
    train_ids = np.asarray(train_ids)
    bad = (train_ids < 0) | (train_ids >= CITYSCAPES_NUM_CLASSES)
    out = CITYSCAPES_TRAIN_ID_TO_LABEL_ID[np.clip(train_ids, 0, CITYSCAPES_NUM_CLASSES - 1)]
    return np.where(bad, 0, out).astype(np.uint8)


def class_names(dataset, num_classes=None):
    """Class names of a known dataset (``"cityscapes"``, ``"voc"``/``"pascal_voc"``,
    ``"ade20k"`` (151 names, 0 = "other"), ``"synthetic"``), or None for an unknown one.

    Args:
        dataset: str. Dataset name.
        num_classes: int or None. For ``"synthetic"``, how many of its classes are used.

    Returns:
        list of str, or None.
    """
    key = str(dataset).lower()
    if key == "cityscapes":
        return list(CITYSCAPES_CLASSES)
    if key in ("voc", "pascal_voc"):
        return list(VOC_CLASSES)
    if key in ("ade20k", "ade"):
        return list(ADE20K_CLASSES)
    if key == "synthetic":
        from keras_deeplab.data.synthetic import CLASS_NAMES

        return list(CLASS_NAMES[:num_classes] if num_classes else CLASS_NAMES)
    return None
