"""End-to-end training / evaluation runs, shared by the recipes and the command line.

`train` takes one `keras_deeplab.training.config.RunConfig` (data / model / optimisation /
evaluation settings; the recipes and ``keras-deeplab train`` only parse flags into it),
builds datasets with `keras_deeplab.data`, the model with `keras_deeplab.models`, trains
with `keras_deeplab.training.fit` and stores the config in the run manifest. `evaluate`
scores a saved model with the one prediction engine (`keras_deeplab.evaluation`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time

import keras
import numpy as np

from keras_deeplab.training.config import (
    MODEL_OPTIONS,
    TRAIN_EVAL_FIELDS,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
)

# Narrow widths per model for smoke runs (``ModelConfig.tiny``): seconds per epoch on a CPU.
TINY_BACKBONE_KWARGS = {"resnet": {"base_filters": 8}, "mobilenetv2": {"alpha": 0.35}}
TINY_MODEL_KWARGS = {
    "deeplabv3plus": {"aspp_filters": 16, "decoder_filters": 16, "low_level_filters": 8},
    "deeplabv3": {"aspp_filters": 16},
    "deeplabv2": {"fc_filters": 16},
    "fcn": {"head_filters": 16},
    "unet": {"filters": (8, 16, 32)},
    "pixel": {"hidden": (16,)},
}


def _model_class(name):
    from keras_deeplab.models.deeplab_v2 import DeepLabV2
    from keras_deeplab.models.deeplab_v3 import DeepLabV3
    from keras_deeplab.models.deeplab_v3_plus import DeepLabV3Plus
    from keras_deeplab.models.fcn import FCN
    from keras_deeplab.models.pixel_classifier import PixelClassifier
    from keras_deeplab.models.unet import UNet

    return {"deeplabv3plus": DeepLabV3Plus, "deeplabv3": DeepLabV3, "deeplabv2": DeepLabV2,
            "fcn": FCN, "unet": UNet, "pixel": PixelClassifier}[name]


def build_model(config="deeplabv3plus", num_classes=19, class_names=None, palette=None,
                **settings):
    """Builds the model a `ModelConfig` describes.

    Args:
        config: `ModelConfig`, or a model name (one of `config.MODELS`) completed by
            ``settings``.
        num_classes: int. Output classes. Defaults to 19.
        class_names, palette: carried by the model (``model.class_names``,
            ``model.palette``: legends and default colours of ``keras-deeplab predict``).
            Defaults to None.
        **settings: `ModelConfig` fields (``backbone=``, ``output_stride=``, ``tiny=`` ...)
            when ``config`` is a name.

    Returns:
        An uncompiled keras_deeplab model (float RGB images in [0, 255] -> logits).

    Raises:
        ValueError: an unknown name, or an option the model does not take (e.g.
            ``backbone=`` for "unet", ``aux_head=True`` for "deeplabv2"); nothing is dropped.

    Example:
    ```python
    model = build_model("deeplabv3", num_classes=21, backbone="resnet50", output_stride=8)
    ```
    """
    if isinstance(config, str):
        config = ModelConfig(model=config, **settings)
    elif settings:
        raise TypeError("Pass settings inside the ModelConfig, not as keyword arguments.")
    config = config.resolved()
    if config.pretrained is not None:  # a published checkpoint, a new classifier
        from keras_deeplab.models import from_pretrained

        model = from_pretrained(config.pretrained, weights=config.pretrained_weights,
                                num_classes=int(num_classes))
        if class_names is not None:
            model.class_names = list(class_names)
        if palette is not None:  # as SegmentationModel.__init__ stores it
            model.palette = palette if isinstance(palette, str) else [
                [int(c) for c in colour] for colour in palette]
        return model
    kwargs = {"num_classes": int(num_classes)}
    if class_names is not None:
        kwargs["class_names"] = list(class_names)
    if palette is not None:
        kwargs["palette"] = palette
    if "backbone" in MODEL_OPTIONS[config.model]:
        weights = config.backbone_weights
        kwargs.update(backbone=config.backbone, output_stride=config.output_stride,
                      backbone_weights=None if weights in (None, "none") else weights)
        if config.tiny:  # ModelConfig refuses a backbone without a narrow form
            family = "resnet" if config.backbone.startswith("resnet") else config.backbone
            kwargs["backbone_kwargs"] = dict(TINY_BACKBONE_KWARGS[family])
    if config.aux_head:
        kwargs["aux_head"] = True
    if config.tiny:
        kwargs.update(TINY_MODEL_KWARGS[config.model])
    return _model_class(config.model)(**kwargs)


def load_dataset(data, split, training, batch_size=None):
    """A batched ``(images, masks)`` dataset of one split, through `keras_deeplab.data`.

    Args:
        data: `DataConfig`.
        split: str. Split name.
        training: bool. Augment to ``data.crop_size`` and shuffle; with
            ``data.augment_on="device"`` the batches carry full-size images and augmentation
            params for `DeviceAugmentedModel`.
        batch_size: int or None. None: ``data.batch_size``.
    """
    from keras_deeplab.data.cityscapes import cityscapes
    from keras_deeplab.data.folder import folder
    from keras_deeplab.data.pascal_voc import pascal_voc
    from keras_deeplab.data.synthetic import synthetic

    common = dict(split=split, batch_size=batch_size or data.batch_size, training=training,
                  output="tuple")
    if training:
        common.update(crop_size=data.crop_size, augment_on=data.augment_on,
                      augment=data.augment)
    if data.dataset == "cityscapes":
        return cityscapes(data.data_dir, **common)
    if data.dataset == "voc":
        return pascal_voc(data.data_dir, **common)
    if data.dataset == "folder":  # <data_dir>/<split>/{images,masks}; the split is the path
        common.pop("split")
        return folder(os.path.join(data.data_dir, split, "images"),
                      os.path.join(data.data_dir, split, "masks"),
                      num_classes=data.num_classes, **common)
    if data.synthetic:  # a smoke run: as many images as a fake tree would hold
        common["num_images"] = (data.synthetic_images if split == data.train_split
                                else max(2, data.synthetic_images // 4))
    return synthetic(num_classes=data.num_classes, image_size=data.image_size, **common)


def _make_loss(optim, class_weights, batch_size):
    from keras_deeplab.training import losses

    if optim.loss == "ce":
        return losses.CrossEntropy(class_weights=class_weights)
    if optim.loss == "ohem":  # DeepLab keeps >= 100k pixels per batch of 8
        return losses.OHEMCrossEntropy(min_kept=max(1, batch_size * 100_000 // 8),
                                       class_weights=class_weights)
    if optim.loss == "lovasz":  # OptimConfig refuses class weights for lovasz and dice
        return losses.LovaszSoftmax()
    return losses.DiceLoss()


def _num_batches(dataset):
    from keras_deeplab.data.batches import dataset_length

    n = dataset_length(dataset)
    if n is None:
        card = getattr(dataset, "cardinality", None)
        if card is not None and int(card()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError("The training dataset repeats forever: pass steps_per_epoch "
                             "(--steps-per-epoch).")
        n = sum(1 for _ in dataset)
    if n == 0:
        raise ValueError("The training dataset is empty.")
    return n


def prepare_synthetic(data, splits=("train", "val"), seed=0, announce=True):
    """Writes the fake tree of ``data.dataset`` for ``data.synthetic`` runs.

    ``data.synthetic_images`` training images (validation: a quarter, at least 2) of side
    ``data.image_size``, at ``data.data_dir`` or a new temporary folder (printed with
    ``announce``).

    Returns:
        ``data`` with ``data_dir`` set to the tree (unchanged for the in-memory "synthetic"
        dataset).
    """
    if data.dataset == "synthetic":
        return data
    from keras_deeplab.data import fake_trees

    root = data.data_dir or tempfile.mkdtemp(prefix=f"fake_{data.dataset}_")
    n = data.synthetic_images
    counts = {s: (n if s == "train" else max(2, n // 4)) for s in splits}
    if data.dataset == "cityscapes":
        path = fake_trees.write_fake_cityscapes(root, counts, data.image_size, seed=seed)
    elif data.dataset == "voc":
        path = fake_trees.write_fake_voc(root, counts, data.image_size, seed=seed)
    else:
        from keras_deeplab.data.synthetic import write_synthetic

        write_synthetic(root, splits=tuple(counts), num_images=counts,
                        num_classes=data.num_classes, image_size=data.image_size, seed=seed,
                        progress=False)
        path = root
    if announce:
        sizes = ", ".join(f"{v} {k}" for k, v in counts.items())
        print(f"--synthetic: fake {data.dataset} tree ({sizes} images of {data.image_size} px) "
              f"in {path}", flush=True)
    return dataclasses.replace(data, data_dir=path)


#: Folder of a --synthetic training run's fake tree, inside its run directory; evaluate and
#: crf-search --synthetic reuse the tree next to their --model.
FAKE_DATA_DIR = "fake_data"


@contextlib.contextmanager
def synthetic_data(data, model=None, splits=("val",), seed=0):
    """The data of an ``evaluate`` / ``crf-search`` run; with ``data.synthetic``, its fake tree.

    Without ``data.data_dir``, the tree of the training run that wrote ``model``
    (``<run>/fake_data``, written by `train`) is reused when it exists; otherwise a new
    tree is written to a temporary folder (announced) that is removed on exit. Without
    ``data.synthetic``, ``data`` is yielded unchanged.
    """
    if not data.synthetic or data.dataset == "synthetic":
        yield data
        return
    if data.data_dir is None and isinstance(model, (str, os.PathLike)):
        run_tree = os.path.join(os.path.dirname(os.path.abspath(model)), FAKE_DATA_DIR)
        if os.path.isdir(run_tree):
            path = os.path.join(run_tree, "VOCdevkit") if data.dataset == "voc" else run_tree
            print(f"--synthetic: reusing the training run's fake tree {path}", flush=True)
            yield dataclasses.replace(data, data_dir=path)
            return
    if data.data_dir is not None:
        yield prepare_synthetic(data, splits=splits, seed=seed)
        return
    tmp = tempfile.mkdtemp(prefix=f"fake_{data.dataset}_")
    try:
        yield prepare_synthetic(dataclasses.replace(data, data_dir=tmp), splits=splits,
                                seed=seed)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _check_train_eval(ev):
    """Validation during training runs `EvaluateMeanIoU` through `kd.training.fit`, which
    takes only `TRAIN_EVAL_FIELDS`; any other evaluation setting raises (never dropped)."""
    default = EvalConfig()
    unsupported = [f.name for f in dataclasses.fields(EvalConfig)
                   if f.name not in TRAIN_EVAL_FIELDS
                   and getattr(ev, f.name) != getattr(default, f.name)]
    if unsupported:
        raise ValueError(f"Validation during training does not support EvalConfig "
                         f"{', '.join(unsupported)}; evaluate the saved model with "
                         "`keras-deeplab evaluate` (recipes/evaluate.py) instead.")


def train(config, recipe=None):
    """Trains the run a `RunConfig` describes with the DeepLab recipe; returns a summary.

    The run directory (``config.run_dir``) gets checkpoints (``best.keras``,
    ``last.keras``), TensorBoard logs, ``history.csv``, ``training_curve.png``,
    ``report.md`` and ``manifest.json`` whose ``"config"`` is ``config.to_dict()``
    (`RunConfig.from_dict` reads it back); a killed run resumes when started again with the
    same config. With ``config.data.synthetic`` a fake tree is written first, to
    ``data.data_dir`` or else ``<run_dir>/fake_data`` (recorded as ``data.data_dir``, and
    reused by `evaluate` / ``crf-search --synthetic`` given the run's model). With
    ``data.augment_on="device"`` the model is trained through `DeviceAugmentedModel`.

    Args:
        config: `RunConfig`.
        recipe: str or None. The command line, recorded in the manifest.

    Returns:
        dict with "run_dir", "config" (as run), "history", "val_miou" (last evaluation),
        "seconds" and "model" (the trained segmentation model).

    Raises:
        TypeError: ``config`` is not a `RunConfig`.
        ValueError: an evaluation setting validation during training does not support.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"train() takes a RunConfig, got {type(config).__name__}; build one "
                        "with keras_deeplab.training.config.")
    _check_train_eval(config.eval)
    from keras_deeplab.data.labels import class_names
    from keras_deeplab.training.aux import aux_loss, with_aux_targets
    from keras_deeplab.training.distribute import (
        check_per_replica_batch,
        get_strategy,
        sync_batchnorm,
    )
    from keras_deeplab.training.fit import check_resume, fit
    from keras_deeplab.training.manifest import write_manifest
    from keras_deeplab.training.mean_iou import MeanIoU
    from keras_deeplab.training.optimizers import poly_sgd
    from keras_deeplab.training.precision import set_precision

    start = time.time()
    # a run directory of another configuration or of a finished run fails here, before
    # any data is written or model built
    check_resume(config.run_dir, config.to_dict(), overwrite=config.overwrite,
                 accept_changes=config.accept_changes)
    if config.data.synthetic:
        data = config.data
        if data.data_dir is None and data.dataset != "synthetic":  # inside the run folder
            data = dataclasses.replace(data, data_dir=os.path.join(config.run_dir,
                                                                   FAKE_DATA_DIR))
        config = dataclasses.replace(config, data=prepare_synthetic(data, seed=config.seed,
                                                                    announce=config.verbose > 0))
    data, optim, ev = config.data, config.optim, config.eval
    num_classes = data.num_classes
    keras.utils.set_random_seed(config.seed)
    previous_policy = set_precision(optim.precision)  # "auto" resolves here
    strategy = get_strategy(config.strategy)
    train_ds = load_dataset(data, data.train_split, training=True)
    val_ds = None
    if data.val_split:
        val_ds = load_dataset(data, data.val_split, training=False, batch_size=ev.batch_size)
        if ev.max_batches:
            val_ds = val_ds.take(ev.max_batches)
    steps_per_epoch = optim.steps_per_epoch or _num_batches(train_ds)
    total_steps = int(optim.epochs) * int(steps_per_epoch)
    class_weights = None
    if optim.class_weighting:
        from keras_deeplab.training.class_weights import compute_class_weights

        class_weights = compute_class_weights(train_ds, num_classes,
                                              method=optim.class_weighting,
                                              progress=config.verbose > 0)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        # the model carries its classes' names and colours (legends of keras-deeplab predict)
        net = build_model(config.model, num_classes,
                          class_names=class_names(data.dataset, num_classes),
                          palette={"cityscapes": "cityscapes", "voc": "voc"}.get(data.dataset))
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if config.sync_bn and replicas > 1:
            sync_batchnorm(net)
        check_per_replica_batch(data.batch_size, strategy, model=net)
        trainer = net
        if data.augment_on == "device":
            from keras_deeplab.data.augment import SegmentationAugmentation
            from keras_deeplab.training.device_augmentation import DeviceAugmentedModel

            trainer = DeviceAugmentedModel(net, SegmentationAugmentation(data.crop_size,
                                                                         data.augment))
        seg_loss = _make_loss(optim, class_weights, data.batch_size)
        optimizer = poly_sgd(optim.base_lr, total_steps, warmup_steps=optim.warmup_steps,
                             momentum=optim.momentum, power=optim.power,
                             weight_decay=optim.weight_decay)
        if config.model.aux_head:
            losses_, weights = aux_loss(seg_loss, optim.aux_weight)
            trainer.compile(optimizer=optimizer, loss=losses_, loss_weights=weights,
                            metrics={"logits": [MeanIoU(num_classes)]})
            train_ds = with_aux_targets(train_ds)
        else:
            trainer.compile(optimizer=optimizer, loss=seg_loss, metrics=[MeanIoU(num_classes)])
    run_dir = config.run_dir
    history = fit(
        trainer, train_ds, optim.epochs, run_dir, val_data=val_ds, num_classes=num_classes,
        config=config.to_dict(),
        dataset={"name": data.dataset, "data_dir": data.data_dir, "train": data.train_split,
                 "val": data.val_split, "steps_per_epoch": steps_per_epoch},
        recipe=recipe, steps_per_epoch=steps_per_epoch, every_n_epochs=ev.every,
        sliding_window=ev.sliding_window, scales=ev.scales, flip=ev.flip,
        class_names=class_names(data.dataset, num_classes), tensorboard=config.tensorboard,
        overwrite=config.overwrite, verbose=config.verbose, backup_steps=config.backup_steps,
        accept_changes=config.accept_changes)
    write_manifest(run_dir, extra={"model": {"class": type(net).__name__,
                                             "parameters": int(net.count_params()),
                                             "dtype_policy": net.dtype_policy.name}})
    keras.config.set_dtype_policy(previous_policy)  # the model keeps its own policy
    return {"run_dir": run_dir, "config": config, "history": history.history,
            "seconds": time.time() - start,
            "val_miou": history.history.get("val_miou", [None])[-1], "model": net}


def evaluate(model, data, eval_config=None, verbose=1):
    """Scores a saved ``.keras`` model (or a model object) on ``data.val_split``.

    Predictions come from the one prediction engine with ``eval_config``'s sliding window,
    overlap, scales, flip and output stride (the labels `kd.inference.Predictor` gives
    with the same settings). With ``eval_config.export_dir`` on Cityscapes, also writes
    labelId PNGs and (``official``) scores them with ``cityscapesscripts``.

    With ``data.synthetic`` the fake tree is found or written first (`synthetic_data`: the
    training run's ``fake_data`` next to ``model``, else a temporary folder removed
    afterwards); ``model=None`` then scores a tiny untrained model, and on Cityscapes the
    export and official scoring run in a temporary folder (the whole evaluation path, in
    seconds).

    Args:
        model: str (``.keras`` path), keras.Model, or None with ``data.synthetic``.
        data: `DataConfig`.
        eval_config: `EvalConfig` or None (defaults).
        verbose: int. Print the IoU table. Defaults to 1.

    Returns:
        dict: "mean_iou", "per_class_iou" (list), "pixel_accuracy", "num_images", ... and
        "cityscapes_official_miou" with ``official``.

    Raises:
        ValueError: ``export_dir`` on a dataset other than Cityscapes, or no model.
    """
    ev = eval_config or EvalConfig()
    if data.synthetic:
        with contextlib.ExitStack() as stack:
            data = stack.enter_context(synthetic_data(data, model, splits=(data.val_split,)))
            if model is None:
                model = build_model(ModelConfig(tiny=True), data.num_classes)
            if data.dataset == "cityscapes" and ev.export_dir is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                ev = dataclasses.replace(ev, export_dir=tmp, official=True)
            return _evaluate(model, data, ev, verbose)
    return _evaluate(model, data, ev, verbose)


def _evaluate(model, data, ev, verbose):
    from keras_deeplab.data.labels import class_names
    from keras_deeplab.evaluation import cityscapes as cs_eval
    from keras_deeplab.evaluation.dataset import evaluate as run_evaluation
    from keras_deeplab.evaluation.dataset import format_iou_table

    if model is None:
        raise ValueError("evaluate() needs a model (--model path/to/best.keras), or "
                         "--synthetic for a tiny untrained one.")
    if ev.export_dir is not None and data.dataset != "cityscapes":
        raise ValueError("--export-dir writes Cityscapes labelId PNGs: it needs --dataset "
                         f"cityscapes, not {data.dataset}.")
    if isinstance(model, (str, os.PathLike)):
        model = keras.models.load_model(model)
    if data.dataset == "cityscapes":
        batches = cs_eval.cityscapes_eval_batches(data.data_dir, data.val_split)
    else:
        batches = load_dataset(data, data.val_split, training=False, batch_size=1)
    names = getattr(model, "class_names", None) or class_names(data.dataset, data.num_classes)
    engine = dict(sliding_window=ev.sliding_window, overlap=ev.overlap, scales=ev.scales,
                  flip=ev.flip, output_stride=ev.output_stride)
    results = run_evaluation(model, batches, num_classes=data.num_classes, class_names=names,
                             max_batches=ev.max_batches, progress=verbose > 0, **engine)
    if verbose:
        print(format_iou_table(results["per_class_iou"], names, results["mean_iou"],
                               results["pixel_accuracy"]))
    if ev.export_dir is not None:
        cs_eval.export_cityscapes_predictions(model, data.data_dir, ev.export_dir,
                                              data.val_split, progress=verbose > 0, **engine)
        if ev.official:
            cs = cs_eval.cityscapes_official_evaluation(ev.export_dir, data.data_dir,
                                                        data.val_split)
            results["cityscapes_official_miou"] = cs["averageScoreClasses"]
            if verbose:
                print(f"cityscapesscripts mIoU: {100 * cs['averageScoreClasses']:.2f}")
    results["per_class_iou"] = np.asarray(results["per_class_iou"]).tolist()
    results["class_names"] = list(names) if names is not None else None
    return results




def train_command(args, dataset=None, recipe=None):
    """``keras-deeplab train`` and the training recipes: parsed flags -> `train`.

    Args:
        args: argparse.Namespace from a parser built by `config.add_train_arguments`.
        dataset: str or None. The recipe's dataset (its parser has no --dataset).
        recipe: str or None. The command line, for the manifest.

    Raises:
        SystemExit: an invalid setting (the message names the flag).
    """
    from keras_deeplab.training.config import run_config_from_args

    try:
        config = run_config_from_args(args, dataset)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    summary = train(config, recipe=recipe)
    miou = summary["val_miou"]
    print(f"Run {summary['run_dir']}: {summary['config'].optim.epochs} epochs in "
          f"{summary['seconds']:.0f} s; val mIoU "
          f"{'n/a' if miou is None else f'{100 * miou:.2f}%'}; report: "
          f"{os.path.join(summary['run_dir'], 'report.md')}")
    return summary


def evaluate_command(args):
    """``keras-deeplab evaluate`` and ``recipes/evaluate.py``: parsed flags -> `evaluate`.

    ``--json`` gets a provenance record (kind "evaluation", valid JSON: NaN, a class absent
    from labels and predictions, is null) with the model path, the data and evaluation
    settings (``"data"``, ``"eval"``: window, overlap, scales, flip, output stride ...) and
    `evaluate`'s results: mean_iou, per_class_iou, pixel_accuracy, num_images, class_names
    and confusion_matrix (rows: ground truth, columns: prediction);
    ``--plot-confusion`` draws the row-normalised matrix
    (`keras_deeplab.evaluation.plots.plot_confusion_matrix`).

    Raises:
        SystemExit: an invalid setting (the message names the flag).
    """
    from keras_deeplab.training.config import config_from_args

    try:
        data = config_from_args(args, "data")
        ev = config_from_args(args, "eval")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    results = evaluate(args.model, data, ev, verbose=args.verbose)
    if args.json:
        from keras_deeplab.provenance import provenance, write_json_atomic

        record = provenance("evaluation", model=args.model, data=dataclasses.asdict(data),
                            eval=dataclasses.asdict(ev), **results)
        if os.path.dirname(args.json):
            os.makedirs(os.path.dirname(args.json), exist_ok=True)
        write_json_atomic(args.json, record)
    if getattr(args, "plot_confusion", None):
        from keras_deeplab.evaluation.plots import plot_confusion_matrix

        plot_confusion_matrix(results["confusion_matrix"], args.plot_confusion,
                              class_names=results.get("class_names"))
    return results


__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "build_model", "evaluate",
           "evaluate_command", "load_dataset", "prepare_synthetic", "train", "train_command"]
