"""Typed run configuration, grouped by stage: data, model, optimisation, evaluation.

One place holds every setting of a run: its type, default, help text and allowed values
(``dataclasses.field(metadata={"help": ..., "choices": ...})``). The command line
(``keras-deeplab train|evaluate|predict``) and the recipes build their flags from these
dataclasses (`add_arguments`) and turn the parsed flags back into a config
(`config_from_args`); the run manifest stores `RunConfig.to_dict` and `RunConfig.from_dict`
reads it back.

Defaults that depend on the dataset (crop, batch, learning rate, epochs, validation interval
and window) are DeepLab's per-dataset settings (Chen et al. 2017, 2018), held once in
`DATASET_DEFAULTS`; a field left at None takes the dataset's value.

Every check raises ``ValueError`` naming the command-line flag and the fix, including for
an option the chosen model or dataset does not support (``--aux-weight`` with DeepLabV2,
``--backbone`` with U-Net ...), which is never silently dropped.

Example:
```python
from keras_deeplab.training.config import DataConfig, RunConfig
config = RunConfig(data=DataConfig("voc", "/data/VOCdevkit"))   # crop 513, batch 16, lr 0.007
kd.training.experiment.train(config)
```
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import os
import re
from typing import Optional, Tuple, Union

# This module imports neither TensorFlow nor Keras (nor a keras_deeplab module that does) at
# import time: the command line builds its parser from it, and ``keras-deeplab --help``
# answers without loading a framework. The other stages' choice lists and the augmentation
# defaults are read from their defining modules' source (`_declared`, one definition each;
# tests/test_cli.py checks them against the imported values); whatever needs the
# stages themselves (the backbone names, the dataset class counts, `AugmentConfig`) is
# imported when a config is built.

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def _declared(module, name):
    """The literal value of ``name = ...`` (or of a dataclass's field defaults, as a dict,
    for ``name`` a class) in ``keras_deeplab/<module>.py``, read without importing it."""
    path = os.path.join(_PACKAGE, *module.split(".")) + ".py"
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.ClassDef) and node.name == name:
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and item.value is not None:
                    try:
                        fields[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:  # a default that is not a literal
                        pass
            return fields
    raise LookupError(f"{name} is not declared in {path}.")


# --- the choice lists (each defined once; the other stages' lists are read from them) ----
CLASS_WEIGHTINGS = _declared("training.class_weights", "METHODS")
STRATEGIES = _declared("training.distribute", "STRATEGIES")
PRECISIONS = _declared("training.precision", "PRECISIONS")
DATASETS = ("cityscapes", "voc", "folder", "synthetic")
MODELS = ("deeplabv3plus", "deeplabv3", "deeplabv2", "fcn", "unet", "pixel")
LOSSES = ("ce", "ohem", "lovasz", "dice")
AUGMENT_ON = ("data", "device")
OUTPUT_STRIDES = (8, 16, 32)



def fixed_num_classes(dataset):
    """Classes of a dataset whose label set is fixed (Cityscapes 19, VOC 21; "synthetic"
    defaults to 6 of its 12), or None ("folder")."""
    from keras_deeplab.data.labels import CITYSCAPES_NUM_CLASSES, VOC_NUM_CLASSES

    return {"cityscapes": CITYSCAPES_NUM_CLASSES, "voc": VOC_NUM_CLASSES,
            "synthetic": 6}.get(dataset)


def _backbones():
    from keras_deeplab.backbones import NAMES

    return NAMES


def _augment_config(*args, **kwargs):
    from keras_deeplab.data.augment import AugmentConfig

    return AugmentConfig(*args, **kwargs)


def _coerce_augment(value):
    from keras_deeplab.data.augment import AugmentConfig

    return AugmentConfig.coerce(value)


def __getattr__(name):
    """The names this module re-exports from the stages, imported on first use (PEP 562):
    ``AugmentConfig``, ``BACKBONES`` (`keras_deeplab.backbones.NAMES`), ``NUM_CLASSES``."""
    if name == "AugmentConfig":
        from keras_deeplab.data.augment import AugmentConfig

        return AugmentConfig
    if name == "BACKBONES":
        return _backbones()
    if name == "NUM_CLASSES":
        return {d: fixed_num_classes(d) for d in ("cityscapes", "voc", "synthetic")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_output_stride(output_stride, allowed):
    from keras_deeplab.utils import check_output_stride as check

    return check(output_stride, allowed)

#: DeepLab's settings per dataset (Chen et al. 2017/2018); fields left at None take these.
DATASET_DEFAULTS = {
    "cityscapes": dict(crop_size=769, batch_size=8, base_lr=0.01, epochs=200, every=10,
                       sliding_window=769),
    "voc": dict(crop_size=513, batch_size=16, base_lr=0.007, epochs=50, every=5,
                sliding_window=None),
    "folder": dict(crop_size=513, batch_size=8, base_lr=0.01, epochs=50, every=5,
                   sliding_window=None),
    "synthetic": dict(crop_size=128, batch_size=8, base_lr=0.01, epochs=20, every=1,
                      sliding_window=None),
}

#: Options each model takes besides ``num_classes`` and ``tiny``; any other one raises.
MODEL_OPTIONS = {
    "deeplabv3plus": ("backbone", "output_stride", "backbone_weights", "aux_head"),
    "deeplabv3": ("backbone", "output_stride", "backbone_weights", "aux_head"),
    "deeplabv2": ("backbone", "output_stride", "backbone_weights"),
    "fcn": ("backbone", "output_stride", "backbone_weights"),
    "unet": (),
    "pixel": (),
}
DEFAULT_BACKBONE, TINY_BACKBONE, DEFAULT_OUTPUT_STRIDE = "resnet101", "resnet18", 16

# Side of the generated images: fake trees of --synthetic, and the synthetic dataset.
SYNTHETIC_TREE_SIZE, SYNTHETIC_DATASET_SIZE = 64, 128
# --synthetic: images of the fake tree, and the batch cap for a smoke run on a CPU.
SYNTHETIC_IMAGES, SYNTHETIC_MAX_BATCH = 8, 4


# --- argparse value types ------------------------------------------------------------------
def parse_floats(text):
    """argparse type: "0.5,1,1.5" -> (0.5, 1.0, 1.5)."""
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_window(text):
    """argparse type: "769" -> 769, "513x1025" -> (513, 1025), "none" -> None."""
    if text in (None, "", "none", "None"):
        return None
    try:
        parts = [int(v) for v in str(text).split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 769, 513x1025 or none, got {text!r}") from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def format_value(value):
    """The command-line text of a value (inverse of the argparse types above)."""
    if value is None:
        return "none"
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _opt_int(text):
    return None if text in ("none", "None", "") else int(text)


def _opt_float(text):
    return None if text in ("none", "None", "") else float(text)


def _opt_str(text):
    return None if text in ("none", "None", "") else str(text)


def _backbone_name(text):
    """argparse type of --backbone: a name of `keras_deeplab.backbones.NAMES` or none (the
    names are imported only when the flag is given, so building the parser needs no
    framework)."""
    if text in ("none", "None", ""):
        return None
    names = _backbones()
    if text not in names:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from "
                                         f"{', '.join(names)})")
    return text


def _setting(default, help, choices=None, type=None, flag=None, aliases=(), per_dataset=False):
    """A dataclass field carrying its command-line description in its metadata."""
    metadata = {"help": help, "choices": choices, "type": type, "flag": flag,
                "aliases": tuple(aliases), "per_dataset": per_dataset}
    if default is _augment_config:
        return dataclasses.field(default_factory=_augment_config, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_of(name, section):
    """The flag of a field, for error messages (training's validation flags carry "eval-",
    see `add_train_arguments`)."""
    dashed = name.replace("_", "-")
    if section == "eval" and name in ("every", "batch_size"):  # training only
        return f"--eval-{dashed}"
    if section == "eval" and name in TRAIN_EVAL_FIELDS:
        return f"--{dashed} (--eval-{dashed} when training)"
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == name and f.metadata.get("flag"):
            return f.metadata["flag"]
    return f"--{dashed}"


def _check_choice(value, name, section, choices):
    if value not in choices:
        raise ValueError(f"{_flag_of(name, section)} {value!r} is not one of "
                         f"{', '.join(map(str, choices))}.")


def _check_positive(value, name, section, allow_zero=False, allow_none=True):
    if value is None and allow_none:
        return
    if value is None or (value < 0 if allow_zero else value <= 0):
        raise ValueError(f"{_flag_of(name, section)} must be {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}.")


# Augmentation settings exposed as flags; defaults and checks are `kd.data.AugmentConfig`'s.
AUGMENT_FLAGS = {
    "min_scale": "random scale: smallest factor",
    "max_scale": "random scale: largest factor",
    "scale_step": "draw scales on this grid (e.g. 0.25 as DeepLab); none: continuous",
    "max_rotation": "random rotation up to this many degrees",
    "brightness": "random brightness, fraction of 255",
    "contrast": "random contrast factor 1 +- this",
    "saturation": "random saturation factor 1 +- this",
    "hue": "random hue rotation, turns (0.5 = 180 degrees)",
    "blur_prob": "probability of a Gaussian blur",
}


@dataclasses.dataclass
class DataConfig:
    """Which data a run reads and how training batches are made.

    Args:
        dataset: str. One of `DATASETS`. Defaults to "cityscapes".
        data_dir: str or None. Dataset root in its official layout (the folder dataset:
            ``<data_dir>/<split>/{images,masks}``). Required except for "synthetic" and
            ``synthetic=True``.
        num_classes: int or None. Required for "folder"; fixed for Cityscapes (19) and
            VOC (21); "synthetic" defaults to 6.
        train_split, val_split: str. Splits; ``val_split=None`` skips validation.
        crop_size: int or None. Training crop in pixels; None: the dataset's default.
        batch_size: int or None. Global training batch; None: the dataset's default.
        augment: `kd.data.AugmentConfig`. Random scale/rotation/photometric/blur settings.
        augment_on: "data" (tf.data, CPU) or "device" (in the train step, on the
            accelerator, through `DeviceAugmentedModel`). Defaults to "data".
        synthetic: bool. Write a small fake tree of ``dataset`` in its real layout (at
            ``data_dir`` or a temporary folder) and make a smoke run on it: crop and batch
            are capped, the model is tiny and untrained. Defaults to False.
        synthetic_images: int or None. Training images of the fake tree (validation gets a
            quarter, at least 2); None: 8 with ``synthetic``.
        image_size: int or None. Side of generated images: the fake trees (64) and the
            "synthetic" dataset (128).

    Raises:
        ValueError: naming the flag, for an unknown dataset, a missing data directory or
            class count, a non-positive size, or a setting the dataset does not use
            (``image_size`` for files on disk, ``synthetic_images`` without ``synthetic``).
    """

    dataset: str = _setting("cityscapes", "dataset", choices=DATASETS)
    data_dir: Optional[str] = _setting(None, "dataset root in its official layout "
                                       "(folder: <data-dir>/<split>/{images,masks})",
                                       type=_opt_str)
    num_classes: Optional[int] = _setting(None, "classes (folder: required; synthetic: 6; "
                                          "Cityscapes 19 and VOC 21 are fixed)", type=_opt_int)
    train_split: str = _setting("train", "training split (VOC with SBD: train_aug)")
    val_split: Optional[str] = _setting("val", "validation split (none: no validation)",
                                        type=_opt_str)
    crop_size: Optional[int] = _setting(None, "training crop in pixels", type=_opt_int,
                                        per_dataset=True)
    batch_size: Optional[int] = _setting(None, "global training batch", type=_opt_int,
                                         per_dataset=True)
    augment: "AugmentConfig" = _setting(_augment_config, "augmentation settings")  # noqa: F821
    augment_on: str = _setting("data", "augment in tf.data on the CPU, or on the accelerator "
                               "in the train step", choices=AUGMENT_ON)
    synthetic: bool = _setting(False, "write a small fake tree of --dataset in its real layout "
                               "and make a smoke run on it (tiny untrained model, crop and "
                               "batch capped)")
    synthetic_images: Optional[int] = _setting(None, "training images of the --synthetic fake "
                                               "tree (none: 8; validation gets a quarter, at "
                                               "least 2)", type=_opt_int)
    image_size: Optional[int] = _setting(None, "side of generated images (none: 64 for "
                                         "--synthetic trees, 128 for the synthetic dataset)",
                                         type=_opt_int, aliases=("--synthetic-size",))

    def __post_init__(self):
        _check_choice(self.dataset, "dataset", "data", DATASETS)
        _check_choice(self.augment_on, "augment_on", "data", AUGMENT_ON)
        self.augment = _coerce_augment(self.augment)
        known = fixed_num_classes(self.dataset)
        if self.num_classes is None:
            if self.dataset == "folder":
                raise ValueError("--num-classes is required for --dataset folder.")
            self.num_classes = known
        elif self.dataset in ("cityscapes", "voc") and self.num_classes != known:
            raise ValueError(f"--num-classes {self.num_classes} does not match {self.dataset} "
                             f"({known} classes); leave it unset.")
        _check_positive(self.num_classes, "num_classes", "data")
        if self.data_dir is None and not self.synthetic and self.dataset != "synthetic":
            raise ValueError(f"--data-dir is required for --dataset {self.dataset} "
                             "(or --synthetic for a fake tree).")
        generated = self.synthetic or self.dataset == "synthetic"
        if self.image_size is not None and not generated:
            raise ValueError(f"--image-size sets generated images: it needs --synthetic or "
                             f"--dataset synthetic, not --dataset {self.dataset} files.")
        if self.synthetic_images is not None and not self.synthetic:
            raise ValueError("--synthetic-images sizes the fake tree: it needs --synthetic.")
        if self.image_size is None and generated:
            self.image_size = SYNTHETIC_TREE_SIZE if self.synthetic else SYNTHETIC_DATASET_SIZE
        if self.synthetic_images is None and self.synthetic:
            self.synthetic_images = SYNTHETIC_IMAGES
        for name in ("crop_size", "batch_size"):
            if getattr(self, name) is None:
                setattr(self, name, DATASET_DEFAULTS[self.dataset][name])
            _check_positive(getattr(self, name), name, "data")
        _check_positive(self.synthetic_images, "synthetic_images", "data")
        _check_positive(self.image_size, "image_size", "data")
        if self.synthetic:  # a smoke run: crop within the fake images, a small batch
            self.crop_size = min(self.crop_size, self.image_size)
            self.batch_size = min(self.batch_size, SYNTHETIC_MAX_BATCH)
        if isinstance(self.val_split, str) and self.val_split.lower() == "none":
            self.val_split = None


@dataclasses.dataclass
class ModelConfig:
    """Which network a run builds (`keras_deeplab.training.experiment.build_model`).

    Args:
        model: str. One of `MODELS`. Defaults to "deeplabv3plus".
        backbone: str or None. One of `keras_deeplab.backbones.NAMES`; None: "resnet101"
            ("resnet18" with ``tiny``) for the models that have one (see `MODEL_OPTIONS`).
        output_stride: int or None. 8, 16 or 32; None: 16 for the models with a backbone.
        backbone_weights: str. "imagenet", a ``.weights.h5`` path, "none", or "auto" (the
            default): "imagenet" ("none" with ``tiny``) for the models with a backbone.
        aux_head: bool. Auxiliary classifier on stride-16 features (DeepLabv3/v3+); set by
            ``OptimConfig.aux_weight > 0``. Defaults to False.
        tiny: bool. Narrow widths (ResNet base 8 filters, 16-filter ASPP/decoder ...) for
            smoke runs. Defaults to False.
        pretrained: str or None. A published checkpoint (`kd.models.list_pretrained`) to
            fine-tune: its backbone and heads, a new classifier for the dataset's classes
            (`kd.models.from_pretrained`). It fixes the architecture: no ``tiny``,
            ``backbone``, ``output_stride`` or ``backbone_weights``. Defaults to None.
        pretrained_weights: str or None. With ``pretrained``: a local ``.pth`` or converted
            ``.weights.h5`` file instead of the download. Defaults to None.

    Raises:
        ValueError: naming the flag, for an unknown name or an option the model does not
            take (``--backbone`` / ``--output-stride`` for U-Net and the pixel classifier,
            ``--aux-weight`` for DeepLabV2 and FCN), ImageNet weights or vgg16 with ``tiny``.
    """

    model: str = _setting("deeplabv3plus", "network", choices=MODELS)
    backbone: Optional[str] = _setting(None, "backbone: a name of keras_deeplab.backbones."
                                       "NAMES, e.g. resnet50, resnet101, mobilenetv2 (an "
                                       "unknown name lists them) (none: resnet101, or "
                                       "resnet18 with --tiny, for the models that have one)",
                                       type=_backbone_name)
    output_stride: Optional[int] = _setting(None, "training output stride (none: 16 for the "
                                            "models with a backbone)",
                                            choices=(None,) + OUTPUT_STRIDES, type=_opt_int)
    backbone_weights: str = _setting("auto", "'imagenet', a .weights.h5 path or 'none' (auto: "
                                     "imagenet, or none with --tiny)", type=str)
    aux_head: bool = _setting(False, "auxiliary head on stride-16 features (DeepLabv3/v3+; "
                              "implied by --aux-weight > 0)")
    tiny: bool = _setting(False, "narrow widths for smoke runs (implied by --synthetic)")
    pretrained: Optional[str] = _setting(None, "fine-tune a published checkpoint (keras-deeplab "
                                         "pretrained list): its backbone and heads, a new "
                                         "classifier for this dataset's classes",
                                         type=_opt_str)
    pretrained_weights: Optional[str] = _setting(None, "with --pretrained: a local .pth or "
                                                 "converted .weights.h5 file instead of "
                                                 "downloading", type=_opt_str)

    def __post_init__(self):
        _check_choice(self.model, "model", "model", MODELS)
        self._check_pretrained()
        if self.backbone is not None:
            _check_choice(self.backbone, "backbone", "model", _backbones())
        if self.output_stride is not None:
            _check_choice(self.output_stride, "output_stride", "model", OUTPUT_STRIDES)
        takes = MODEL_OPTIONS[self.model]
        accepted = ", ".join("--" + t.replace("_", "-") for t in takes) or "no backbone options"
        given = {"backbone": self.backbone is not None,
                 "output_stride": self.output_stride is not None,
                 "backbone_weights": self.backbone_weights not in (None, "none", "auto"),
                 "aux_head": bool(self.aux_head)}
        for name, is_set in given.items():
            if is_set and name not in takes:
                hint = " (set by --aux-weight > 0)" if name == "aux_head" else ""
                raise ValueError(f"--model {self.model} does not support "
                                 f"{_flag_of(name, 'model')}{hint}; it takes {accepted}.")
        if self.tiny and given["backbone_weights"]:
            raise ValueError(f"--backbone-weights {self.backbone_weights} do not fit the narrow "
                             "layers of --tiny (implied by --synthetic); leave it at auto.")
        if self.tiny and self.backbone == "vgg16":
            raise ValueError("--tiny has no narrow form of --backbone vgg16; use a ResNet or "
                             "mobilenetv2.")

    def _check_pretrained(self):
        if self.pretrained is None:
            if self.pretrained_weights is not None:
                raise ValueError("--pretrained-weights is the file of a --pretrained checkpoint; "
                                 "give --pretrained NAME too.")
            return
        from keras_deeplab.models import list_pretrained  # training imports models only

        known = [row["name"] for row in list_pretrained()]
        if self.pretrained not in known:
            raise ValueError(f"--pretrained {self.pretrained!r} is not a published checkpoint; "
                             f"known: {', '.join(known)}.")
        fixed = {"--tiny (implied by --synthetic)": self.tiny,
                 "--backbone": self.backbone is not None,
                 "--output-stride": self.output_stride is not None,
                 "--backbone-weights": self.backbone_weights not in (None, "none", "auto")}
        for flag, is_set in fixed.items():
            if is_set:
                raise ValueError(f"--pretrained {self.pretrained} fixes the architecture; "
                                 f"drop {flag}.")

    def resolved(self):
        """A copy with the model's defaults filled in (backbone, stride, weights)."""
        if self.pretrained is not None:  # the checkpoint fixes the architecture
            return dataclasses.replace(self, backbone_weights="none")
        if "backbone" not in MODEL_OPTIONS[self.model]:
            return dataclasses.replace(self, backbone_weights="none")
        return dataclasses.replace(
            self,
            backbone=self.backbone or (TINY_BACKBONE if self.tiny else DEFAULT_BACKBONE),
            output_stride=self.output_stride or DEFAULT_OUTPUT_STRIDE,
            backbone_weights=(("none" if self.tiny else "imagenet")
                              if self.backbone_weights in (None, "auto")
                              else self.backbone_weights))


@dataclasses.dataclass
class OptimConfig:
    """How a run optimises: schedule, loss, precision.

    Args:
        epochs: int or None. None: the dataset's default.
        steps_per_epoch: int or None. None: one pass over the training set.
        base_lr: float or None. Poly schedule's initial rate; None: the dataset's default.
        power: float. Poly exponent. Defaults to 0.9.
        momentum: float. SGD momentum. Defaults to 0.9.
        weight_decay: float. L2 decay on kernels only. Defaults to 4e-5.
        warmup_steps: int. Linear warm-up steps. Defaults to 0.
        loss: str. One of `LOSSES`. Defaults to "ce".
        class_weighting: str or None. One of `kd.training.class_weights.METHODS`.
        aux_weight: float. Loss weight of the auxiliary head; > 0 adds the head. Defaults to 0.
        precision: str. One of `kd.training.PRECISIONS`; "auto" picks mixed_bfloat16 on a
            CPU-only backend whose CPU has AVX512_BF16/AMX, else float32
            (`kd.training.set_precision`; the manifest's ``model.dtype_policy`` records the
            result). Defaults to "float32" (bf16 accuracy parity on the demo is not shown:
            `benchmarks/RESULTS.md`).

    Raises:
        ValueError: naming the flag, for unknown names, out-of-range numbers, or class
            weights with a loss that takes none (lovasz, dice).
    """

    epochs: Optional[int] = _setting(None, "epochs", type=_opt_int, per_dataset=True)
    steps_per_epoch: Optional[int] = _setting(None, "steps per epoch (none: one pass over the "
                                              "training set)", type=_opt_int)
    base_lr: Optional[float] = _setting(None, "initial learning rate of the poly schedule",
                                        type=_opt_float, per_dataset=True)
    power: float = _setting(0.9, "poly schedule exponent", type=float)
    momentum: float = _setting(0.9, "SGD momentum", type=float)
    weight_decay: float = _setting(4e-5, "L2 weight decay, on kernels only", type=float)
    warmup_steps: int = _setting(0, "linear learning-rate warm-up steps", type=int)
    loss: str = _setting("ce", "segmentation loss", choices=LOSSES)
    class_weighting: Optional[str] = _setting(None, "class weights computed from the training "
                                              "masks", choices=(None,) + CLASS_WEIGHTINGS,
                                              type=_opt_str)
    aux_weight: float = _setting(0.0, "> 0 adds an auxiliary head with this loss weight",
                                 type=float)
    precision: str = _setting("float32", "compute precision", choices=PRECISIONS)

    def __post_init__(self):
        _check_choice(self.loss, "loss", "optim", LOSSES)
        _check_choice(self.precision, "precision", "optim", PRECISIONS)
        if self.class_weighting is not None:
            _check_choice(self.class_weighting, "class_weighting", "optim", CLASS_WEIGHTINGS)
        for name in ("epochs", "steps_per_epoch", "base_lr"):
            _check_positive(getattr(self, name), name, "optim")
        for name in ("power", "momentum", "weight_decay", "warmup_steps", "aux_weight"):
            _check_positive(getattr(self, name), name, "optim", allow_zero=True,
                            allow_none=False)
        if self.momentum >= 1:
            raise ValueError(f"--momentum must be < 1, got {self.momentum}.")
        if self.class_weighting is not None and self.loss not in ("ce", "ohem"):
            raise ValueError(f"--class-weighting applies to --loss ce or ohem, not {self.loss}.")


@dataclasses.dataclass
class EvalConfig:
    """How predictions are scored: the one prediction engine's settings, plus scheduling.

    ``sliding_window``, ``overlap``, ``scales``, ``flip`` and ``output_stride`` go to
    `kd.training.evaluate` and `kd.inference.Predictor` unchanged (the same engine).

    Args:
        sliding_window: int, (h, w) or None. Window size; None: whole images.
        overlap: float in [0, 1). Window overlap. Defaults to 1/3.
        scales: tuple of float. Multi-scale inference scales. Defaults to (1.0,).
        flip: bool. Also predict the mirrored image. Defaults to False.
        output_stride: int or None. Evaluate at this output stride (8 for DeepLab's best
            numbers); None: the model's own.
        every: int or None. Validate every N epochs while training; None: the dataset's
            default.
        batch_size: int. Validation batch during training. Defaults to 1 (full-size images).
        max_batches: int or None. Score at most this many batches.
        export_dir: str or None. Cityscapes: write labelId PNGs of the predictions here.
        official: bool. Cityscapes: also score the PNGs with cityscapesscripts.

    Raises:
        ValueError: naming the flag, for out-of-range values.
    """

    sliding_window: Optional[Union[int, Tuple[int, int]]] = _setting(
        None, "sliding-window size, 769 or 513x1025 (none: whole images)", type=parse_window,
        per_dataset=True)
    overlap: float = _setting(1 / 3, "overlap of neighbouring windows, in [0, 1)", type=float)
    scales: Tuple[float, ...] = _setting((1.0,), "inference scales, e.g. 0.75,1,1.25",
                                         type=parse_floats)
    flip: bool = _setting(False, "also predict the mirrored image (averaged)")
    output_stride: Optional[int] = _setting(None, "output stride at inference (none: the "
                                            "model's)", choices=(None,) + OUTPUT_STRIDES,
                                            type=_opt_int)
    every: Optional[int] = _setting(None, "validate every N epochs", type=_opt_int,
                                    per_dataset=True)
    batch_size: int = _setting(1, "validation batch (full-size images)", type=int)
    max_batches: Optional[int] = _setting(None, "score at most this many batches (none: all)",
                                          type=_opt_int)
    export_dir: Optional[str] = _setting(None, "Cityscapes: write labelId PNGs here",
                                         type=_opt_str)
    official: bool = _setting(False, "Cityscapes: also score the PNGs with cityscapesscripts")

    def __post_init__(self):
        if self.sliding_window is not None:
            size = ((self.sliding_window,) * 2 if isinstance(self.sliding_window, int)
                    else tuple(self.sliding_window))
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"--sliding-window must be a positive size, 769 or 513x1025; "
                                 f"got {self.sliding_window!r}.")
            self.sliding_window = self.sliding_window if isinstance(
                self.sliding_window, int) else size
        if not 0 <= self.overlap < 1:
            raise ValueError(f"--overlap must be in [0, 1), got {self.overlap}.")
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"--scales must be positive numbers, got {self.scales}.")
        if self.output_stride is not None:
            check_output_stride(self.output_stride, OUTPUT_STRIDES)
        for name in ("every", "max_batches"):
            _check_positive(getattr(self, name), name, "eval")
        _check_positive(self.batch_size, "batch_size", "eval", allow_none=False)
        if self.official and self.export_dir is None:
            raise ValueError("--official scores exported PNGs: give --export-dir too.")


@dataclasses.dataclass
class RunConfig:
    """One training run: where it is written, its seed and strategy, and the four stages.

    Dataset-dependent defaults left at None (epochs, learning rate, validation interval)
    are filled from `DATASET_DEFAULTS`; the model's defaults from `ModelConfig.resolved`;
    ``optim.aux_weight > 0`` sets ``model.aux_head``. With ``data.synthetic`` the run is a
    smoke run: tiny untrained model, validation every epoch, window capped to the images.

    Args:
        data: DataConfig. Required.
        runs_dir: str. Parent folder of run directories. Defaults to "saved_models".
        run_name: str or None. None: "<model>_<backbone>_<dataset>", naming what is built:
            "deeplabv3plus_resnet18-tiny_voc-synthetic" for a ``data.synthetic`` smoke run.
        seed: int. Global seed (weights, shuffling, augmentation). Defaults to 0.
        strategy: str. One of `kd.training.distribute.STRATEGIES`. Defaults to "auto".
        sync_bn: bool. Synchronised batch norm with several replicas. Defaults to True.
        overwrite: bool. Start again in an existing run directory. Defaults to False.
        accept_changes: bool. Resume although the configuration, dataset size or steps per
            epoch changed (recorded in the manifest). Defaults to False.
        backup_steps: int or None. Optimizer steps between step-level backups; a kill
            loses at most this many steps (200: about 3 minutes at the Cityscapes recipe
            defaults, benchmarks/RESULTS.md). None: after every epoch only. Defaults to 200.
        tensorboard: bool. Write TensorBoard logs. Defaults to True.
        verbose: int. Defaults to 1.
        model, optim, eval: the other stage configs (their defaults if not given).

    Example:
    ```python
    config = RunConfig(data=DataConfig("cityscapes", "/data/cityscapes"),
                       model=ModelConfig("deeplabv3plus", backbone="resnet50"))
    assert RunConfig.from_dict(config.to_dict()) == config
    ```
    """

    data: DataConfig
    runs_dir: str = _setting("saved_models", "parent folder of run directories")
    run_name: Optional[str] = _setting(None, "run directory name (none: "
                                       "<model>_<backbone>_<dataset>; smoke runs name "
                                       "what they build: resnet18-tiny, voc-synthetic)",
                                       type=_opt_str)
    seed: int = _setting(0, "global random seed", type=int)
    strategy: str = _setting("auto", "distribution strategy", choices=STRATEGIES)
    sync_bn: bool = _setting(True, "synchronised batch norm with several replicas (the flag "
                             "turns it off)",
                             flag="--no-sync-bn")
    overwrite: bool = _setting(False, "start an existing run directory again")
    accept_changes: bool = _setting(False, "resume a run although its configuration, dataset "
                                    "size or steps per epoch changed (the changes are "
                                    "recorded in its manifest)")
    backup_steps: Optional[int] = _setting(200, "optimizer steps between step-level backups "
                                           "(none: after every epoch only)", type=_opt_int)
    tensorboard: bool = _setting(True, "TensorBoard logs (the flag turns them off)",
                                 flag="--no-tensorboard")
    verbose: int = _setting(1, "0: silent, 1: progress", type=int)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        _check_choice(self.strategy, "strategy", "run", STRATEGIES)
        _check_positive(self.backup_steps, "backup_steps", "run")
        for name, cls in (("data", DataConfig), ("model", ModelConfig), ("optim", OptimConfig),
                          ("eval", EvalConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _from_dict(cls, value))
            elif not isinstance(value, cls):
                raise TypeError(f"RunConfig.{name} must be a {cls.__name__}, got {value!r}.")
        defaults = DATASET_DEFAULTS[self.data.dataset]
        optim = {k: defaults[k] for k in ("epochs", "base_lr") if getattr(self.optim, k) is None}
        if optim:
            self.optim = dataclasses.replace(self.optim, **optim)
        model = {}
        if self.optim.aux_weight > 0:
            model["aux_head"] = True
        elif self.model.aux_head:
            raise ValueError("--aux-head needs a loss weight: give --aux-weight > 0.")
        ev = {} if self.eval.every is not None else {"every": defaults["every"]}
        if self.data.synthetic:  # a smoke run on a fake tree
            model["tiny"] = True
            ev["every"] = 1
            if self.eval.sliding_window is not None:
                window = self.eval.sliding_window
                size = self.data.image_size
                ev["sliding_window"] = (min(window, size) if isinstance(window, int)
                                        else tuple(min(w, size) for w in window))
        self.model = dataclasses.replace(self.model, **model).resolved()
        if ev:
            self.eval = dataclasses.replace(self.eval, **ev)
        if self.run_name is None:  # what was built: "-tiny" widths, "-synthetic" fake data
            tiny = "-tiny" if self.model.tiny else ""
            model, backbone = self.model.model, self.model.backbone
            if self.model.pretrained:  # the checkpoint's architecture
                model = self.model.pretrained.split(".")[0]
            self.run_name = "_".join(p for p in (
                model + ("" if backbone else tiny), backbone and backbone + tiny,
                self.data.dataset + ("-synthetic" if self.data.synthetic else "")) if p)

    @property
    def run_dir(self):
        """``<runs_dir>/<run_name>``: checkpoints, logs and ``manifest.json``."""
        return os.path.join(self.runs_dir, self.run_name)

    def to_dict(self):
        """A JSON-ready dict (``{"runs_dir", ..., "data": {...}, "model": {...}, ...}``)."""
        from keras_deeplab.provenance import jsonable

        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, config):
        """The `RunConfig` of a `to_dict` result (e.g. a run manifest's ``"config"``).

        Raises:
            ValueError: a key that is not a setting (names it).
        """
        return _from_dict(cls, config)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "eval": EvalConfig,
            "run": RunConfig}
_NESTED = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "eval": EvalConfig}


def _from_dict(cls, config):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} settings {unknown}; expected some of "
                         f"{sorted(names)}.")
    kwargs = {}
    for key, value in config.items():
        if cls is RunConfig and key in _NESTED:
            value = _from_dict(_NESTED[key], value)
        elif key == "augment":
            value = _coerce_augment({k: tuple(v) if isinstance(v, list) else v
                                          for k, v in value.items()})
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


# --- argparse ------------------------------------------------------------------------------
class _PerDataset:
    """argparse default of a setting whose default depends on --dataset."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        values = ", ".join(f"{d} {format_value(v[self.name])}"
                           for d, v in DATASET_DEFAULTS.items())
        return f"per dataset: {values}"

    __str__ = __repr__


def add_arguments(parser, section, *, prefix="", only=None, exclude=(), defaults=None,
                  flags=None, title=None, per_dataset=False):
    """Adds the flags of one stage config to an argparse parser.

    Every flag shows its default in ``--help`` (use
    ``argparse.ArgumentDefaultsHelpFormatter``); its destination is ``"<section>.<field>"``
    (``"data.augment.<field>"`` for the augmentation), which `config_from_args` reads.

    Args:
        parser: argparse.ArgumentParser.
        section: "data", "model", "optim", "eval" or "run".
        prefix: str. Prepended to flag names (train's validation flags use "eval-").
        only: iterable of field names, or None for all of them.
        exclude: iterable of field names to leave out.
        defaults: dict field -> value overriding the dataclass default (a recipe's dataset).
        flags: dict field -> flag name overriding the derived one (e.g. "--split").
        title: str or None. Title of the argument group.
        per_dataset: bool. Fields whose default depends on the dataset (crop, batch, lr,
            epochs, validation interval and window) default to the parsed --dataset's value
            from `DATASET_DEFAULTS` (``keras-deeplab train``); otherwise (False) to the
            dataclass default, e.g. whole-image evaluation.

    Returns:
        The argument group.
    """
    cls = SECTIONS[section]
    defaults, flags = dict(defaults or {}), dict(flags or {})
    group = parser.add_argument_group(title or f"{section} ({cls.__name__})")
    for f in dataclasses.fields(cls):
        if f.name in _NESTED and cls is RunConfig:
            continue
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        meta = f.metadata
        if f.name == "augment":
            base = defaults.get("augment")
            declared = _declared("data.augment", "AugmentConfig")
            for sub, text in AUGMENT_FLAGS.items():
                value = getattr(base, sub) if base is not None else declared[sub]
                group.add_argument(f"--{prefix}{sub.replace('_', '-')}",
                                   dest=f"{section}.augment.{sub}", metavar=sub.upper(),
                                   type=float if sub != "scale_step" else _opt_float,
                                   default="none" if value is None else value, help=text)
            continue
        name = flags.get(f.name) or meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"
        options = [name] + ([a for a in meta.get("aliases", ()) if not prefix]
                            if f.name not in flags else [])
        dest = f"{section}.{f.name}"
        default = defaults.get(f.name, f.default)
        if isinstance(default, bool) or f.default is True or f.default is False:
            group.add_argument(*options, dest=dest, default=default,
                               action="store_false" if f.default else "store_true",
                               help=meta["help"])
            continue
        kwargs = {"dest": dest, "help": meta["help"], "metavar": f.name.upper()}
        if per_dataset and meta.get("per_dataset") and f.name not in defaults:
            kwargs["default"] = _PerDataset(f.name)
        elif isinstance(default, (tuple, list)) or default is None:
            kwargs["default"] = format_value(default)  # parsed by `type`; shown as typed
        else:
            kwargs["default"] = default
        kwargs["type"] = meta.get("type") or (type(f.default) if f.default is not None
                                              else str)
        if meta.get("choices"):
            choices = [c for c in meta["choices"] if c is not None]
            kwargs["choices"] = choices + (["none"] if None in meta["choices"] else [])
            kwargs.pop("metavar")
            kwargs["type"] = _choice_type(meta.get("type"), choices)
        group.add_argument(*options, **kwargs)
    return group


def _choice_type(base, choices):
    """argparse type for a choice: converts (e.g. int) and keeps "none" as the text "none"
    (argparse checks choices after conversion)."""

    def convert(text):
        if text in ("none", "None"):
            return "none"
        return base(text) if base not in (None, _opt_str) else text

    return convert


def _value(args, dest):
    value = getattr(args, dest)
    return None if value == "none" else value


def config_from_args(args, section, dataset=None, **overrides):
    """The stage config of ``section`` from parsed flags (see `add_arguments`).

    Settings without a flag take the dataclass default; a per-dataset default takes
    ``dataset``'s value (or that of the parsed --dataset; for "data", ``dataset`` is also the
    dataset itself); ``overrides`` set fields directly.

    Raises:
        ValueError: an invalid value, naming its flag.
    """
    cls = SECTIONS[section]
    if section == "data" and dataset:  # a recipe's dataset (its parser has no --dataset)
        overrides.setdefault("dataset", dataset)
    dataset = dataset or getattr(args, "data.dataset", None) or DataConfig.dataset
    values = {}
    for f in dataclasses.fields(cls):
        dest = f"{section}.{f.name}"
        if f.name == "augment":
            subs = {sub: getattr(args, f"{dest}.{sub}") for sub in AUGMENT_FLAGS
                    if hasattr(args, f"{dest}.{sub}")}
            if subs:
                try:
                    values["augment"] = _augment_config(**subs)
                except ValueError as e:  # name the flags, not the fields
                    raise ValueError(re.sub(r"\b(%s)\b" % "|".join(AUGMENT_FLAGS),
                                            lambda m: "--" + m.group(1).replace("_", "-"),
                                            str(e))) from None
            continue
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if isinstance(value, _PerDataset):
            value = DATASET_DEFAULTS[dataset][f.name]
        if value == "none" and None in (f.metadata.get("choices") or ()):
            value = None
        values[f.name] = value
    values.update(overrides)
    return cls(**values)


def run_config_from_args(args, dataset=None):
    """The `RunConfig` of ``keras-deeplab train`` / a training recipe's parsed flags
    (``dataset``: the recipe's dataset, which has no --dataset flag)."""
    data = config_from_args(args, "data", dataset)
    return config_from_args(args, "run", data=data,
                            model=config_from_args(args, "model", data.dataset),
                            optim=config_from_args(args, "optim", data.dataset),
                            eval=config_from_args(args, "eval", data.dataset))


def dataset_defaults(section, dataset):
    """The per-dataset defaults (`DATASET_DEFAULTS`) of one section's fields."""
    return {f.name: DATASET_DEFAULTS[dataset][f.name] for f in dataclasses.fields(SECTIONS[section])
            if f.metadata.get("per_dataset")}


def add_train_arguments(parser, dataset=None):
    """All flags of a training run: ``keras-deeplab train`` (``dataset=None``: a --dataset
    flag and per-dataset defaults) or a recipe for one dataset (its defaults shown)."""
    def defaults(section):
        return dataset_defaults(section, dataset) if dataset else {}

    if dataset:
        add_arguments(parser, "data", exclude=("dataset",), defaults=defaults("data"),
                      title=f"data ({dataset}, DataConfig)")
    else:
        add_arguments(parser, "data", per_dataset=True)
    add_arguments(parser, "model")
    add_arguments(parser, "optim", defaults=defaults("optim"), per_dataset=True)
    add_arguments(parser, "eval", prefix="eval-", only=TRAIN_EVAL_FIELDS,
                  defaults=defaults("eval"), title="validation during training (EvalConfig)",
                  per_dataset=True)
    add_arguments(parser, "run")
    return parser


#: The evaluation settings validation during training supports (`kd.training.fit`).
TRAIN_EVAL_FIELDS = ("sliding_window", "scales", "flip", "every", "batch_size", "max_batches")


def add_evaluate_arguments(parser, model_required=True):
    """The flags of ``keras-deeplab evaluate`` and ``recipes/evaluate.py``."""
    parser.add_argument("--model", required=model_required, help=".keras file")
    add_arguments(parser, "data", only=("dataset", "data_dir", "num_classes", "val_split",
                                        "image_size", "synthetic", "synthetic_images"),
                  flags={"val_split": "--split"})
    add_arguments(parser, "eval", exclude=("every", "batch_size"))
    parser.add_argument("--json", default=None, help="write the results (model, settings, "
                        "per-class IoU, confusion matrix; null for absent classes) to this "
                        "JSON file")
    parser.add_argument("--plot-confusion", default=None, metavar="PNG",
                        help="draw the row-normalised confusion matrix (needs matplotlib)")
    parser.add_argument("--verbose", type=int, default=1, help="0: silent, 1: progress")
    return parser
