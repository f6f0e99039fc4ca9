"""The registry: published checkpoints (data) and the architectures that load them (code).

A `Checkpoint` records what the source publishes about one weights file; an
`Architecture` (registered with `register_architecture`) builds our model for it and maps
the source's state_dict keys onto the model's layers. See the package docstring for the
plug-in contract.
"""

import dataclasses
from typing import Callable, Optional

from keras_deeplab.data.labels import VOC_CLASSES

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
        sha256_prefix: str. The leading hex digits of the file's SHA-256, as torchvision
            publishes them in the file name (``...-cd0a2569.pth``; torchvision's own
            ``check_hash`` compares this prefix). The full digest is not published.
        source: str. "torchvision".
        dataset: str. What it was trained on, in the source's words.
        class_names: tuple of str. Output classes, index = class id.
        palette: str or tuple. Palette name for `keras_deeplab.data.palette.get_palette`.
        aux: bool. The file holds an auxiliary head (``aux_classifier.*``).
        mean, std: tuples of 3 floats. Normalisation of RGB in [0, 1] the weights expect
            (applied by a layer inside the converted model, which takes [0, 255]).
        resize_short_side: int or None. The source's evaluation resizes the image's short
            side to this many pixels (bilinear, antialiased) before the model.
        source_metrics: dict. The source's own published figures (not measured here),
            e.g. ``{"miou": 66.4, "pixel_acc": 92.4}`` on ``metrics_dataset``.
        metrics_dataset: str. The source's name for the evaluation set.
        metrics_url: str. Where the source publishes the figures.
        source_num_params: int. Parameter count the source publishes.
        source_gflops: float. GFLOPs the source publishes (its ``_ops`` at 520 px).
        file_size_mb: float. The source's published file size in MB.
        licence: str. SPDX id of the weights' licence.
        licence_url: str.
    """

    name: str
    arch: str
    url: str
    sha256_prefix: str
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
    source_num_params: int
    source_gflops: float
    file_size_mb: float
    licence: str
    licence_url: str

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
    )


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
    figures on ``metrics_dataset``, not measured by us), ``metrics_url``, ``num_params``
    (the source's count), ``file_size_mb`` (the source's), ``licence``, ``url``,
    ``available`` (True when the architecture is registered, i.e. `from_pretrained` can
    build it).

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
            "source_pixel_acc": c.source_metrics["pixel_acc"],
            "metrics_dataset": c.metrics_dataset,
            "metrics_url": c.metrics_url,
            "num_params": c.source_num_params,
            "file_size_mb": c.file_size_mb,
            "licence": c.licence,
            "url": c.url,
            "available": c.arch in _ARCHITECTURES,
        })
    return rows
