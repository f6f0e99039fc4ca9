"""End-to-end training / evaluation runs, shared by the recipes and the command line.

Each function takes explicit keyword arguments (the recipes only parse arguments and call
these), builds datasets with `keras_deeplab.data`, the model with `keras_deeplab.models`,
and trains with `keras_deeplab.training.fit`.
"""

from __future__ import annotations

import inspect
import os
import time

import keras
import numpy as np

DATASETS = ("cityscapes", "voc", "folder", "synthetic")
MODELS = ("deeplabv3plus", "deeplabv3", "deeplabv2", "fcn", "unet")
LOSSES = ("ce", "ohem", "lovasz", "dice")
NUM_CLASSES = {"cityscapes": 19, "voc": 21}
# A narrow backbone for smoke runs (--tiny / --synthetic): seconds per epoch on a CPU.
TINY_MODEL_KWARGS = {"backbone": "resnet18", "backbone_kwargs": {"base_filters": 8},
                     "aspp_filters": 16, "decoder_filters": 16, "low_level_filters": 8}


def class_names_for(dataset, num_classes):
    if dataset == "cityscapes":
        from keras_deeplab.data.labels import CITYSCAPES_CLASSES as CITYSCAPES_CLASS_NAMES

        return list(CITYSCAPES_CLASS_NAMES)
    if dataset == "voc":
        return ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
                "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    return None


def _call_accepting(fn, *args, **kwargs):
    """Calls ``fn`` with the keyword arguments its signature names (others dropped)."""
    params = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def build_model(model="deeplabv3plus", num_classes=19, backbone="resnet101", output_stride=16,
                backbone_weights=None, tiny=False, aux_head=False):
    """Builds a keras_deeplab model from its short name ("deeplabv3plus", "deeplabv3", ...)."""
    from keras_deeplab import models

    classes = {"deeplabv3plus": models.DeepLabV3Plus, "deeplabv3": models.DeepLabV3,
               "deeplabv2": models.DeepLabV2, "fcn": models.FCN, "unet": models.UNet}
    if model not in classes:
        raise ValueError(f"Unknown model {model!r}; expected one of {MODELS}.")
    cls = classes[model]
    kwargs = {"num_classes": num_classes, "backbone": backbone, "output_stride": output_stride,
              "backbone_weights": backbone_weights, "aux_head": aux_head or None}
    if tiny:
        kwargs.update(TINY_MODEL_KWARGS)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _call_accepting(cls, **kwargs)


def augment_config(min_scale=0.5, max_scale=2.0, augment=None):
    """The `kd.data.AugmentConfig` of a run: the scale range plus any extra settings."""
    from keras_deeplab.data import AugmentConfig

    return AugmentConfig.coerce({"min_scale": min_scale, "max_scale": max_scale,
                                 **(augment or {})})


def load_dataset(dataset, data_dir, split, training, batch_size=8, crop_size=513,
                 min_scale=0.5, max_scale=2.0, num_classes=None, image_size=None, augment=None,
                 augment_on="data"):
    """A batched `(images, masks)` dataset for one split, through `keras_deeplab.data`.

    ``augment`` holds extra `kd.data.AugmentConfig` settings (rotation, jitter, blur...);
    with ``augment_on="device"`` training batches carry full-size images and augmentation
    params for `kd.data.SegmentationAugmentation`.
    """
    from keras_deeplab import data

    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {DATASETS}.")
    common = dict(split=split, batch_size=batch_size, training=training, output="tuple")
    if training:
        common.update(crop_size=crop_size, augment_on=augment_on,
                      augment=augment_config(min_scale, max_scale, augment))
    if dataset == "cityscapes":
        return _call_accepting(data.cityscapes, data_dir, **common)
    if dataset == "voc":
        return _call_accepting(data.pascal_voc, data_dir, **common)
    if dataset == "folder":
        return _call_accepting(data.folder, os.path.join(data_dir, split, "images"),
                               os.path.join(data_dir, split, "masks"),
                               num_classes=num_classes, **common)
    return _call_accepting(data.synthetic, num_classes=num_classes or 6,
                           image_size=image_size or 128, **common)


def _make_loss(loss, class_weights=None, min_kept=100_000):
    from keras_deeplab.training import losses

    if loss == "ce":
        return losses.CrossEntropy(class_weights=class_weights)
    if loss == "ohem":
        return losses.OHEMCrossEntropy(min_kept=min_kept, class_weights=class_weights)
    if loss == "lovasz":
        return losses.LovaszSoftmax()
    if loss == "dice":
        return losses.DiceLoss()
    raise ValueError(f"Unknown loss {loss!r}; expected one of {LOSSES}.")


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


def prepare_synthetic(dataset, root, image_size=64, num_images=None, seed=0):
    """Writes a fake tree for ``dataset`` under ``root``; returns the data directory."""
    from keras_deeplab.data import fake_trees as fake_datasets

    if dataset == "cityscapes":
        return fake_datasets.write_fake_cityscapes(root, num_images, image_size, seed=seed)
    if dataset == "voc":
        return fake_datasets.write_fake_voc(root, num_images, image_size, seed=seed)
    if dataset == "folder":
        from keras_deeplab import data

        counts = num_images or {"train": 8, "val": 4}
        data.write_synthetic(root, splits=tuple(counts), num_images=counts,
                             image_size=image_size, seed=seed, progress=False)
        return root
    raise ValueError(f"No synthetic tree for dataset {dataset!r}.")


def train(dataset="cityscapes", data_dir=None, run_dir="saved_models/run", model="deeplabv3plus",
          backbone="resnet101", output_stride=16, backbone_weights=None, tiny=False,
          num_classes=None, train_split="train", val_split="val", crop_size=769, batch_size=8,
          epochs=10, steps_per_epoch=None, base_lr=0.01, power=0.9, momentum=0.9,
          weight_decay=4e-5, warmup_steps=0, min_scale=0.5, max_scale=2.0, loss="ce",
          class_weighting=None, aux_weight=0.0, precision="float32", strategy="auto",
          sync_bn=True, augment=None, augment_on="data", eval_every=1, eval_sliding_window=None, eval_scales=(1.0,),
          eval_flip=False, eval_batch_size=1, max_val_batches=None, image_size=None, seed=0,
          overwrite=False, tensorboard=True, recipe=None, verbose=1):
    """Trains a model on a dataset with the DeepLab recipe; returns a summary dict.

    The defaults are DeepLab's Cityscapes settings: output stride 16, crop 769, batch 8, poly
    learning rate 0.01 with power 0.9, SGD momentum 0.9, weight decay 4e-5 on kernels,
    random scale 0.5-2.0 (``augment`` adds `kd.data.AugmentConfig` settings; ``augment_on=
    "device"`` runs the augmentation in the train step on the accelerator). The run directory gets checkpoints, TensorBoard logs and a
    manifest (see `keras_deeplab.training.fit`); a killed run resumes when started again.

    Returns:
        dict with "run_dir", "history", "val_miou" (last evaluation), "seconds", "model".
    """
    config = {k: v for k, v in locals().items() if k not in ("recipe", "verbose")}
    if tiny:  # the manifest records the backbone actually built
        config["backbone"] = TINY_MODEL_KWARGS["backbone"]
        config["backbone_kwargs"] = TINY_MODEL_KWARGS["backbone_kwargs"]
    from keras_deeplab.training import (
        aux_loss,
        check_per_replica_batch,
        get_strategy,
        poly_sgd,
        set_precision,
        sync_batchnorm,
        with_aux_targets,
    )
    from keras_deeplab.training import fit as robust_fit
    from keras_deeplab.training import metrics as kd_metrics

    start = time.time()
    keras.utils.set_random_seed(seed)
    num_classes = num_classes or NUM_CLASSES.get(dataset)
    if num_classes is None:
        raise ValueError(f"num_classes is required for dataset {dataset!r}.")
    set_precision(precision)
    strategy_obj = get_strategy(strategy)
    train_ds = load_dataset(dataset, data_dir, train_split, True, batch_size, crop_size,
                            min_scale, max_scale, num_classes, image_size, augment=augment,
                            augment_on=augment_on)
    val_ds = None
    if val_split:
        val_ds = load_dataset(dataset, data_dir, val_split, False, eval_batch_size, crop_size,
                              min_scale, max_scale, num_classes, image_size)
    if steps_per_epoch is None:
        steps_per_epoch = _num_batches(train_ds)
    total_steps = int(epochs) * int(steps_per_epoch)
    class_weights = None
    if class_weighting:
        from keras_deeplab.training.class_weights import compute_class_weights

        class_weights = compute_class_weights(train_ds, num_classes, method=class_weighting,
                                              progress=verbose > 0)
    scope = strategy_obj.scope() if strategy_obj is not None else _nullcontext()
    with scope:
        net = build_model(model, num_classes, backbone, output_stride, backbone_weights, tiny,
                          aux_head=aux_weight > 0)
        replicas = strategy_obj.num_replicas_in_sync if strategy_obj is not None else 1
        if sync_bn and replicas > 1:
            sync_batchnorm(net)
        check_per_replica_batch(batch_size, strategy_obj, model=net)
        seg_loss = _make_loss(loss, class_weights, min_kept=max(1, batch_size * 100_000 // 8))
        optimizer = poly_sgd(base_lr, total_steps, warmup_steps=warmup_steps,
                             momentum=momentum, power=power, weight_decay=weight_decay)
        if aux_weight > 0:
            losses_, weights = aux_loss(seg_loss, aux_weight)
            net.compile(optimizer=optimizer, loss=losses_, loss_weights=weights,
                        metrics={"logits": [kd_metrics.MeanIoU(num_classes)]})
            train_ds = with_aux_targets(train_ds)
        else:
            net.compile(optimizer=optimizer, loss=seg_loss,
                        metrics=[kd_metrics.MeanIoU(num_classes)])
        if augment_on == "device":
            from keras_deeplab.data import SegmentationAugmentation

            net.set_augmentation(SegmentationAugmentation(
                crop_size, augment_config(min_scale, max_scale, augment)))
    class_names = class_names_for(dataset, num_classes)
    if val_ds is not None and max_val_batches:
        val_ds = val_ds.take(max_val_batches) if hasattr(val_ds, "take") else val_ds
    history = robust_fit(
        net, train_ds, epochs, run_dir, val_data=val_ds, num_classes=num_classes,
        config=config, dataset={"name": dataset, "data_dir": data_dir, "train": train_split,
                                "val": val_split, "steps_per_epoch": steps_per_epoch},
        recipe=recipe, steps_per_epoch=steps_per_epoch, every_n_epochs=eval_every,
        sliding_window=eval_sliding_window, scales=eval_scales, flip=eval_flip,
        class_names=class_names, tensorboard=tensorboard, overwrite=overwrite, verbose=verbose)
    from keras_deeplab.training.manifest import write_manifest

    write_manifest(run_dir, extra={"model": {"class": type(net).__name__,
                                             "parameters": int(net.count_params())}})
    summary = {"run_dir": run_dir, "history": history.history, "seconds": time.time() - start,
               "val_miou": history.history.get("val_miou", [None])[-1], "model": net}
    return summary


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def evaluate(model_path, dataset="cityscapes", data_dir=None, split="val", num_classes=None,
             sliding_window=None, scales=(1.0,), flip=False, output_stride=None,
             export_dir=None, official=False, image_size=None, max_batches=None, verbose=1):
    """Evaluates a saved ``.keras`` model (or a model object) on a split; returns results.

    With ``export_dir`` on Cityscapes, also writes labelId PNGs and (``official=True``) runs
    ``cityscapesscripts``' evaluation on them.
    """
    from keras_deeplab.evaluation import cityscapes as cityscapes_export
    from keras_deeplab.evaluation import evaluate as run_evaluation
    from keras_deeplab.evaluation import format_iou_table

    model = (keras.models.load_model(model_path) if isinstance(model_path, (str, os.PathLike))
             else model_path)
    num_classes = num_classes or NUM_CLASSES.get(dataset)
    if dataset == "cityscapes":
        data = cityscapes_export.cityscapes_eval_batches(data_dir, split)
    else:
        data = load_dataset(dataset, data_dir, split, False, 1, None, num_classes=num_classes,
                            image_size=image_size)
    names = class_names_for(dataset, num_classes)
    results = run_evaluation(model, data, num_classes=num_classes, sliding_window=sliding_window,
                             scales=scales, flip=flip, output_stride=output_stride,
                             class_names=names, max_batches=max_batches, progress=verbose > 0)
    if verbose:
        print(format_iou_table(results["per_class_iou"], names, results["mean_iou"],
                               results["pixel_accuracy"]))
    if export_dir is not None:
        if dataset != "cityscapes":
            raise ValueError("export_dir is only supported for Cityscapes (labelId PNGs).")
        if output_stride is not None:
            from keras_deeplab.models import with_output_stride

            model = with_output_stride(model, output_stride)
        cityscapes_export.export_cityscapes_predictions(
            model, data_dir, export_dir, split, sliding_window=sliding_window, scales=scales,
            flip=flip, progress=verbose > 0)
        if official:
            cs = cityscapes_export.cityscapes_official_evaluation(export_dir, data_dir, split)
            results["cityscapes_official_miou"] = cs["averageScoreClasses"]
            if verbose:
                print(f"cityscapesscripts mIoU: {100 * cs['averageScoreClasses']:.2f}")
    results["per_class_iou"] = np.asarray(results["per_class_iou"]).tolist()
    return results
