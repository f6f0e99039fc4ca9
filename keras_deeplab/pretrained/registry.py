"""The registry: published checkpoints (data) and the architectures that load them (code).

Sources: torchvision 0.28's ``COCO_WITH_VOC_LABELS_V1`` weights (six ``.pth`` files) and the
TensorFlow DeepLab model zoo (six ``.tar.gz`` TF1 checkpoints: Xception-65 DeepLabv3+ and
MobileNetV2 DeepLabv3 for PASCAL VOC, Cityscapes and ADE20K).

A `Checkpoint` records what the source publishes about one weights file; an
`Architecture` (registered with `register_architecture`) builds our model for it and maps
the source's state_dict keys onto the model's layers. See the package docstring for the
plug-in contract.
"""

import dataclasses
from typing import Callable, Optional

from keras_deeplab.data.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES

TORCHVISION_LICENCE = "BSD-3-Clause"
TORCHVISION_LICENCE_URL = "https://github.com/pytorch/vision/blob/main/LICENSE"
#: torchvision's SemanticSegmentation preset: ImageNet mean / std on RGB in [0, 1].
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
_TV_DOCS = "https://pytorch.org/vision/stable/models.html#semantic-segmentation"
_TV_SOURCE = "https://github.com/pytorch/vision/blob/v0.28.0/torchvision/models/segmentation/"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint, with what its source says about it.

    Attributes:
        name: str. ``"<arch>.<source>_<training data>"``, e.g.
            ``"deeplabv3_resnet50.torchvision_coco_voc"``.
        arch: str. Registered architecture name (torchvision's builder name).
        url: str. Download URL exactly as the source publishes it.
        sha256_prefix: str or None. The leading hex digits of the file's SHA-256, as
            torchvision publishes them in the file name (``...-cd0a2569.pth``; torchvision's
            own ``check_hash`` compares this prefix). The full digest is not published.
            None where the source publishes no hash (the TensorFlow DeepLab model zoo): the
            conversion's full variable check (every variable, every shape) is then the
            integrity check of the download.
        source: str. "torchvision" or "tensorflow-deeplab".
        dataset: str. What it was trained on, in the source's words.
        class_names: tuple of str. Output classes, index = class id.
        palette: str or tuple. Palette name for `keras_deeplab.data.palette.get_palette`.
        aux: bool. The file holds an auxiliary head (``aux_classifier.*``).
        mean, std: tuples of 3 floats. Normalisation of RGB in [0, 1] the weights expect
            (applied by a layer inside the converted model, which takes [0, 255]).
        resize_short_side: int or None. The source's evaluation resizes the image's short
            side to this many pixels (bilinear, antialiased) before the model; None: the
            full image (the TF model zoo).
        source_metrics: dict. The source's own published figures in percent (not measured
            here) on ``metrics_dataset``: ``"miou"`` and ``"pixel_acc"`` (None where not
            published) in the setting ``eval_setting`` names first, and for the TF model
            zoo's second row ``"miou_os8_ms_flip"`` (OS 8, multi-scale, left-right flip).
        metrics_dataset: str. The source's name for the evaluation set.
        metrics_url: str. Where the source publishes the figures.
        source_num_params: int or None. Parameter count the source publishes (None: not
            published).
        source_gflops: float or None. GFLOPs the source publishes (torchvision's ``_ops``
            at 520 px; None: not published in that unit).
        file_size_mb: float. The source's published file size in MB.
        licence: str. SPDX id of the weights' licence.
        licence_url: str.
        format: str. How the file is read: "torch" (a ``.pth`` state_dict, needs torch) or
            "tf-checkpoint-archive" (a ``.tar.gz`` holding a TF1 checkpoint,
            `keras_deeplab.pretrained.tf_checkpoint`). Defaults to "torch".
        eval_setting: str or None. The setting of ``source_metrics`` in the source's words
            (output stride, eval scales, flip, image size).
        notes: str or None. What a user must know to use the outputs (e.g. Cityscapes
            trainIds).
    """

    name: str
    arch: str
    url: str
    sha256_prefix: Optional[str]
    source: str
    dataset: str
    class_names: tuple
    palette: object
    aux: bool
    mean: tuple
    std: tuple
    resize_short_side: Optional[int]
    source_metrics: dict
    metrics_dataset: str
    metrics_url: str
    source_num_params: Optional[int]
    source_gflops: Optional[float]
    file_size_mb: float
    licence: str
    licence_url: str
    format: str = "torch"
    eval_setting: Optional[str] = None
    notes: Optional[str] = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def filename(self):
        return self.url.rsplit("/", 1)[-1]


def _torchvision(arch, file, sha, miou, pixel_acc, num_params, gflops, size_mb, aux, module):
    return Checkpoint(
        name=f"{arch}.torchvision_coco_voc",
        arch=arch,
        url=f"https://download.pytorch.org/models/{file}",
        sha256_prefix=sha,
        source="torchvision",
        dataset="COCO train2017, the 20 Pascal VOC categories + background "
                "(torchvision COCO_WITH_VOC_LABELS_V1)",
        class_names=tuple(VOC_CLASSES),
        palette="voc",
        aux=aux,
        mean=TORCHVISION_MEAN,
        std=TORCHVISION_STD,
        resize_short_side=520,
        source_metrics={"miou": miou, "pixel_acc": pixel_acc},
        metrics_dataset="COCO-val2017-VOC-labels",
        metrics_url=f"{_TV_DOCS} ; {_TV_SOURCE}{module}",
        source_num_params=num_params,
        source_gflops=gflops,
        file_size_mb=size_mb,
        licence=TORCHVISION_LICENCE,
        licence_url=TORCHVISION_LICENCE_URL,
        format="torch",
        eval_setting="short side resized to 520 px, single scale, no flip (torchvision's "
                     "SemanticSegmentation preset)",
    )


TF_DEEPLAB_LICENCE = "Apache-2.0"
TF_DEEPLAB_LICENCE_URL = "https://github.com/tensorflow/models/blob/master/LICENSE"
#: Where the TensorFlow DeepLab model zoo publishes its URLs, figures and file sizes.
TF_DEEPLAB_MODEL_ZOO = ("https://github.com/tensorflow/models/blob/master/research/deeplab/"
                        "g3doc/model_zoo.md")
_TF_DATASETS = {
    # key: (class names, palette, metrics dataset, notes)
    "voc": (VOC_CLASSES, "voc", "PASCAL VOC 2012 val", None),
    "cityscapes": (CITYSCAPES_CLASSES, "cityscapes", "Cityscapes val (fine annotations)",
                   "Outputs are Cityscapes trainIds 0..18 (keras_deeplab.data.labels."
                   "CITYSCAPES_LABELS); convert them with keras_deeplab.data.labels."
                   "train_ids_to_label_ids for result PNGs and the official scripts."),
    "ade20k": (ADE20K_CLASSES, "ade20k", "ADE20K val (SceneParsing, 150 classes)",
               "151 outputs: id 0 'other' (unlabeled pixels, ignored by the source's "
               "evaluation) and the 150 SceneParsing classes (keras_deeplab.data.labels."
               "ADE20K_CLASSES)."),
}


def _tf_deeplab(arch, suffix, file, dataset, trained_on, miou, eval_setting, size_mb,
                pixel_acc=None, miou_os8_ms_flip=None):
    class_names, palette, metrics_dataset, notes = _TF_DATASETS[dataset]
    metrics = {"miou": miou, "pixel_acc": pixel_acc}
    if miou_os8_ms_flip is not None:
        metrics["miou_os8_ms_flip"] = miou_os8_ms_flip
    return Checkpoint(
        name=f"{arch}.{suffix}",
        arch=arch,
        url=f"http://download.tensorflow.org/models/{file}",
        sha256_prefix=None,
        source="tensorflow-deeplab",
        dataset=trained_on,
        class_names=tuple(class_names),
        palette=palette,
        aux=False,
        # the models scale RGB in [0, 255] to [-1, 1]: (x / 255 - 0.5) / 0.5
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        resize_short_side=None,
        source_metrics=metrics,
        metrics_dataset=metrics_dataset,
        metrics_url=TF_DEEPLAB_MODEL_ZOO,
        source_num_params=None,
        source_gflops=None,
        file_size_mb=size_mb,
        licence=TF_DEEPLAB_LICENCE,
        licence_url=TF_DEEPLAB_LICENCE_URL,
        format="tf-checkpoint-archive",
        eval_setting=eval_setting,
        notes=notes,
    )


_OS16_THEN_OS8 = ("miou: output stride 16, eval scales [1.0], no flip; miou_os8_ms_flip: output "
                  "stride 8, eval scales {scales}, left-right flip (the model zoo's two rows)")


#: torchvision 0.28's ``*_Weights.COCO_WITH_VOC_LABELS_V1`` entries (URL, published metrics
#: ``_metrics``, ``num_params``, ``_ops``, ``_file_size``), copied from its source.
CHECKPOINTS = {
    c.name: c
    for c in (
        _torchvision("fcn_resnet50", "fcn_resnet50_coco-1167a1af.pth", "1167a1af",
                     60.5, 91.4, 35322218, 152.717, 135.009, True, "fcn.py"),
        _torchvision("fcn_resnet101", "fcn_resnet101_coco-7ecb50ca.pth", "7ecb50ca",
                     63.7, 91.9, 54314346, 232.738, 207.711, True, "fcn.py"),
        _torchvision("deeplabv3_resnet50", "deeplabv3_resnet50_coco-cd0a2569.pth", "cd0a2569",
                     66.4, 92.4, 42004074, 178.722, 160.515, True, "deeplabv3.py"),
        _torchvision("deeplabv3_resnet101", "deeplabv3_resnet101_coco-586e9e4e.pth", "586e9e4e",
                     67.4, 92.4, 60996202, 258.743, 233.217, True, "deeplabv3.py"),
        _torchvision("deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large-fc3c493d.pth",
                     "fc3c493d", 60.3, 91.2, 11029328, 10.452, 42.301, True, "deeplabv3.py"),
        _torchvision("lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large-d234d4ea.pth",
                     "d234d4ea", 57.9, 91.2, 3221538, 2.086, 12.49, False, "lraspp.py"),
        # TensorFlow DeepLab model zoo (research/deeplab/g3doc/model_zoo.md): URL, figures
        # (val, percent), eval settings and file sizes as published there; no hash published
        _tf_deeplab("deeplabv3plus_xception65", "tf_voc_trainaug",
                    "deeplabv3_pascal_train_aug_2018_01_04.tar.gz", "voc",
                    "MS-COCO, then PASCAL VOC 2012 train_aug (model zoo: "
                    "xception_coco_voc_trainaug)", 82.20,
                    _OS16_THEN_OS8.format(scales="[0.5:0.25:1.75]"), 439.0,
                    miou_os8_ms_flip=83.58),
        _tf_deeplab("deeplabv3plus_xception65", "tf_cityscapes_trainfine",
                    "deeplabv3_cityscapes_train_2018_02_06.tar.gz", "cityscapes",
                    "ImageNet, then Cityscapes train_fine (model zoo: "
                    "xception_cityscapes_trainfine)", 78.79,
                    _OS16_THEN_OS8.format(scales="[0.75:0.25:1.25]"), 439.0,
                    miou_os8_ms_flip=80.42),
        _tf_deeplab("deeplabv3plus_xception65", "tf_ade20k",
                    "deeplabv3_xception_ade20k_train_2018_05_29.tar.gz", "ade20k",
                    "ImageNet, then ADE20K train (model zoo: xception_ade20k_train)", 45.65,
                    "output stride 8, eval scales [0.5:0.25:1.75], left-right flip", 439.0,
                    pixel_acc=82.52),
        _tf_deeplab("deeplabv3_mobilenetv2", "tf_voc_trainaug",
                    "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz", "voc",
                    "MS-COCO, then PASCAL VOC 2012 train_aug (model zoo: "
                    "mobilenetv2_coco_voc_trainaug)", 75.32,
                    _OS16_THEN_OS8.format(scales="[0.5:0.25:1.75]"), 23.0,
                    miou_os8_ms_flip=77.33),
        _tf_deeplab("deeplabv3_mobilenetv2", "tf_cityscapes_trainfine",
                    "deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz", "cityscapes",
                    "MS-COCO, then Cityscapes train_fine (model zoo: "
                    "mobilenetv2_coco_cityscapes_trainfine)", 70.71,
                    _OS16_THEN_OS8.format(scales="[0.75:0.25:1.25]"), 23.0,
                    miou_os8_ms_flip=73.57),
        _tf_deeplab("deeplabv3plus_mobilenetv2", "tf_ade20k",
                    "deeplabv3_mnv2_ade20k_train_2018_12_03.tar.gz", "ade20k",
                    "ImageNet, then ADE20K train (model zoo: mobilenetv2_ade20k_train)", 32.04,
                    "output stride 16, eval scales [1.0], no flip", 24.8, pixel_acc=75.41),
    )
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one architecture is built and how a source state_dict maps onto it.

    Attributes:
        name: str. torchvision's builder name, e.g. "deeplabv3_resnet50".
        build: callable ``(num_classes, aux, class_names=None, palette=None) -> model``.
        map_keys: callable ``model -> {torch module prefix: keras layer}``.
    """

    name: str
    build: Callable
    map_keys: Callable


_ARCHITECTURES = {}


def register_architecture(name, build, map_keys):
    """Registers an architecture under ``name`` (see the package docstring for the contract).

    Raises:
        ValueError: ``name`` is already registered to different functions.
    """
    arch = Architecture(name, build, map_keys)
    old = _ARCHITECTURES.get(name)
    if old is not None and old.build.__module__ != build.__module__:
        raise ValueError(f"Architecture {name!r} is already registered (by {old.build.__module__}).")
    _ARCHITECTURES[name] = arch
    return arch


def architectures():
    """Names of the registered architectures, sorted."""
    return sorted(_ARCHITECTURES)


def get_architecture(name):
    """The registered `Architecture` called ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; registered: {', '.join(architectures())}.")
    return _ARCHITECTURES[name]


def get_checkpoint(name):
    """The `Checkpoint` called ``name`` (a `Checkpoint` is returned as is).

    Raises:
        ValueError: unknown name; the message lists every known checkpoint.
    """
    if isinstance(name, Checkpoint):
        return name
    if name not in CHECKPOINTS:
        known = "\n  ".join(CHECKPOINTS)
        raise ValueError(f"Unknown pretrained checkpoint {name!r}. Known checkpoints:\n  {known}\n"
                         "(kd.models.list_pretrained() describes each.)")
    return CHECKPOINTS[name]


def list_pretrained():
    """One dict per published checkpoint, in registry order.

    Keys: ``name``, ``arch``, ``source``, ``dataset``, ``num_classes``, ``classes`` (tuple
    of names), ``source_miou`` and ``source_pixel_acc`` (percent, the source's published
    figures on ``metrics_dataset``, not measured by us; ``source_pixel_acc`` None where not
    published), ``source_metrics`` (all the source's figures), ``eval_setting`` (the
    setting of those figures, in the source's words), ``metrics_url``, ``num_params`` (the
    source's count, None where not published), ``file_size_mb`` (the source's), ``licence``,
    ``url``, ``sha256_prefix`` (None: no hash published), ``format`` ("torch" or
    "tf-checkpoint-archive"), ``notes``, ``available`` (True when the architecture is
    registered, i.e. `from_pretrained` can build it).

    Example:
    >>> [row["name"] for row in list_pretrained()][:1]
    ['fcn_resnet50.torchvision_coco_voc']
    """
    rows = []
    for c in CHECKPOINTS.values():
        rows.append({
            "name": c.name,
            "arch": c.arch,
            "source": c.source,
            "dataset": c.dataset,
            "num_classes": c.num_classes,
            "classes": c.class_names,
            "source_miou": c.source_metrics["miou"],
            "source_pixel_acc": c.source_metrics.get("pixel_acc"),
            "source_metrics": dict(c.source_metrics),
            "eval_setting": c.eval_setting,
            "metrics_dataset": c.metrics_dataset,
            "metrics_url": c.metrics_url,
            "num_params": c.source_num_params,
            "file_size_mb": c.file_size_mb,
            "licence": c.licence,
            "url": c.url,
            "sha256_prefix": c.sha256_prefix,
            "format": c.format,
            "notes": c.notes,
            "available": c.arch in _ARCHITECTURES,
        })
    return rows
