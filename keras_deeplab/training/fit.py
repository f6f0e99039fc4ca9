"""Robust training: checkpoints, resume after a crash, evaluation, TensorBoard, manifest.

`fit` wraps `model.fit` with the callbacks a long segmentation run needs (see
`training_callbacks` for the list and their order) and with input checks that fail early:
dataset classes vs model classes, an empty validation set, a resume directory written by a
different configuration, a run that already finished.

Layout of a run directory ``saved_models/<run>/``::

    manifest.json     config, dataset, git commit, versions, metrics, status
    backup/           BackupAndRestore state (deleted when the run finishes)
    best.keras        best model by val_miou (when there is a validation set)
    last.keras        model after the last epoch
    logs/             TensorBoard (scalars + masks/ with prediction panels)
"""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_deeplab.data.batches import iterate_batches
from keras_deeplab.training._utils import model_num_classes
from keras_deeplab.training import run_report
from keras_deeplab.training.evaluate_mean_iou import EvaluateMeanIoU
from keras_deeplab.training.manifest import (
    ManifestWriter,
    jsonable,
    read_manifest,
    write_manifest,
)
from keras_deeplab.training.stop_on_nan import StopOnNaN
from keras_deeplab.training.tensorboard_masks import TensorBoardMasks

# Config keys that may change between a crashed run and its resumption.
RESUME_IGNORED_KEYS = ("data_dir", "run_dir", "runs_dir", "output_dir", "verbose", "progress",
                       "resume", "overwrite")


class _BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only=True)` that waits quietly on epochs without the
    monitored value (validation runs every N epochs)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.monitor not in logs:
            return
        super().on_epoch_end(epoch, logs)


def check_dataset_classes(model, dataset, num_classes=None, ignore_class=255, max_batches=2):
    """Raises if the dataset's labels or declared classes disagree with the model.

    Looks at the first ``max_batches`` batches: every label must be a class id of the model
    or ``ignore_class``.
    """
    model_classes = model_num_classes(model)
    if num_classes is not None and int(num_classes) != model_classes:
        raise ValueError(
            f"The dataset has {num_classes} classes but the model predicts {model_classes}. "
            f"Build the model with num_classes={num_classes}.")
    for _, masks in iterate_batches(dataset, max_batches=max_batches):
        if masks is None:
            raise ValueError("The training dataset yields no segmentation masks.")
        masks = np.asarray(masks)
        labels = masks[masks != ignore_class] if ignore_class is not None else masks
        if labels.size and (labels.max() >= model_classes or labels.min() < 0):
            raise ValueError(
                f"The dataset holds label {int(labels.max())} (or {int(labels.min())}) but the "
                f"model predicts {model_classes} classes (ignore label {ignore_class}). Check "
                "num_classes, or map the labels (e.g. Cityscapes labelIds -> trainIds).")


def check_not_empty(dataset, name="validation"):
    """Raises ValueError if ``dataset`` yields no batch."""
    card = getattr(dataset, "cardinality", None)
    if card is not None:
        try:
            if int(card()) == 0:
                raise ValueError(f"The {name} dataset is empty (cardinality 0).")
        except TypeError:
            pass
    for _ in iterate_batches(dataset, max_batches=1):
        return
    raise ValueError(f"The {name} dataset is empty: it yielded no batches. Check the split name, "
                     "the data directory and any take()/filter() applied to it.")


def _flatten(config, prefix=""):
    """``{"data": {"crop_size": 769}}`` -> ``{"data.crop_size": 769}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(run_dir, config, overwrite=False, ignored_keys=RESUME_IGNORED_KEYS):
    """Decides whether ``run_dir`` can be used for a run with ``config``.

    Returns True when there is a backup to resume from. Raises ValueError when the directory
    was written by a different configuration, or holds a finished run (unless ``overwrite``).
    """
    manifest = read_manifest(run_dir)
    if manifest is None or overwrite:
        return False
    backup = os.path.isdir(os.path.join(run_dir, "backup"))
    previous = manifest.get("config") or {}
    if config is not None:
        # nested configs (RunConfig.to_dict: {"data": {...}, ...}) compare key by key
        previous, current = _flatten(previous), _flatten(jsonable(config))
        keys = {k for k in set(previous) | set(current)
                if k.rsplit(".", 1)[-1] not in ignored_keys}
        diff = sorted(k for k in keys if previous.get(k) != current.get(k))
        if diff:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in diff)
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({details}). Use another "
                "run name, or overwrite=True (--overwrite) to start it again.")
    if manifest.get("status") == "finished" and not backup:
        raise ValueError(f"{run_dir} holds a finished run. Use another run name, or "
                         "overwrite=True (--overwrite) to train it again.")
    return backup


def training_callbacks(run_dir, val_data=None, every_n_epochs=1, sliding_window=None,
                       scales=(1.0,), flip=False, class_names=None, config=None, dataset=None,
                       recipe=None, tensorboard=True, save_last=True, verbose=1):
    """The callbacks of a robust run, in the order they must run.

    1. `StopOnNaN`: stop (and raise) on a non-finite loss, naming the step.
    2. `EvaluateMeanIoU` (with ``val_data``): writes ``val_miou`` and per-class IoU to logs.
    3. `keras.callbacks.ModelCheckpoint` ``best.keras`` on ``val_miou`` (with ``val_data``).
    4. `keras.callbacks.ModelCheckpoint` ``last.keras`` every epoch (``save_last``).
    5. `keras.callbacks.BackupAndRestore` in ``backup/``: a killed run resumes at the epoch
       after the last completed one, with weights, optimizer state and schedule step.
    6. `keras.callbacks.TensorBoard` in ``logs/`` and `TensorBoardMasks` (``tensorboard``).
    7. `ManifestWriter`: ``manifest.json`` with config, dataset, commit and metrics.
    8. `run_report.EpochCSVLogger` ``history.csv``, `run_report.RunReport` ``report.md`` and
       ``training_curve.png``, and (``verbose``) `run_report.EpochLine`, the compact
       console line (keras_deeplab/training/run_report.py).
    """
    callbacks = [StopOnNaN()]
    if val_data is not None:
        callbacks.append(EvaluateMeanIoU(val_data, every_n_epochs=every_n_epochs,
                                         sliding_window=sliding_window, scales=scales,
                                         flip=flip, class_names=class_names, verbose=verbose))
        callbacks.append(_BestCheckpoint(
            os.path.join(run_dir, "best.keras"), monitor="val_miou", mode="max",
            save_best_only=True, verbose=0))
    if save_last:
        callbacks.append(keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "last.keras"),
                                                         verbose=0))
    callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")))
    if tensorboard:
        try:
            import tensorboard as _  # noqa: F401

            log_dir = os.path.join(run_dir, "logs")
            callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
            if val_data is not None:
                callbacks.append(TensorBoardMasks(log_dir, val_data,
                                                  every_n_epochs=every_n_epochs))
        except ImportError:
            pass
    callbacks.append(ManifestWriter(run_dir, config=config, dataset=dataset, recipe=recipe))
    callbacks += run_report.run_callbacks(run_dir, callbacks, config=config,
                                          class_names=class_names, verbose=verbose)
    return callbacks


def fit(model, train_data, epochs, run_dir, val_data=None, num_classes=None, config=None,
        dataset=None, recipe=None, steps_per_epoch=None, every_n_epochs=1, sliding_window=None,
        scales=(1.0,), flip=False, class_names=None, tensorboard=True, overwrite=False,
        callbacks=(), verbose=1):
    """Trains a compiled model robustly; returns the `keras.callbacks.History`.

    Args:
        model: a compiled segmentation model.
        train_data: training dataset (`{"images", "segmentation_masks"}` or tuples).
        epochs: int. Number of epochs.
        run_dir: str. Run directory (e.g. "saved_models/deeplabv3plus_cityscapes").
        val_data: validation dataset or None.
        num_classes: int or None. Classes of the dataset; must equal the model's.
        config: dict. Hyper-parameters, recorded in the manifest and compared on resume.
        dataset: dict. Dataset description for the manifest.
        recipe: str. Command line for the manifest.
        steps_per_epoch: int or None. Passed to `model.fit`.
        every_n_epochs, sliding_window, scales, flip, class_names: validation settings
            (see `keras_deeplab.callbacks.EvaluateMeanIoU`).
        tensorboard: bool. Write TensorBoard logs. Defaults to True.
        overwrite: bool. Start again in a run directory that holds another or a finished
            run. Defaults to False.
        callbacks: extra callbacks, run after the built-in ones.
        verbose: int. Defaults to 1.

    Raises:
        ValueError: classes mismatch, empty validation set, run directory of another
            configuration or of a finished run.

    Example:
    ```python
    model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=epochs * steps),
                  loss=kd.losses.CrossEntropy())
    kd.training.fit(model, train, epochs, "saved_models/run1", val_data=val,
                    config={"lr": 0.01, "crop": 769})
    ```
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("Compile the model before kd.training.fit (optimizer, loss, metrics).")
    check_dataset_classes(model, train_data, num_classes)
    if val_data is not None:
        check_not_empty(val_data)
    if overwrite and os.path.isdir(os.path.join(run_dir, "backup")):
        import shutil

        shutil.rmtree(os.path.join(run_dir, "backup"))
    resuming = check_resume(run_dir, config, overwrite=overwrite)
    if overwrite and read_manifest(run_dir) is not None:
        os.remove(os.path.join(run_dir, "manifest.json"))
    os.makedirs(run_dir, exist_ok=True)
    if verbose and resuming:
        print(f"Resuming the run in {run_dir} from its last completed epoch.")
    write_manifest(run_dir, config=config, dataset=dataset, recipe=recipe,
                   extra={"status": "running", "epochs": int(epochs)})
    cbs = training_callbacks(run_dir, val_data, every_n_epochs=every_n_epochs,
                             sliding_window=sliding_window, scales=scales, flip=flip,
                             class_names=class_names, config=config, dataset=dataset,
                             recipe=recipe, tensorboard=tensorboard, verbose=verbose)
    try:
        # tf.data pipelines shuffle themselves (Keras warns when asked to shuffle them).
        shuffle = not hasattr(train_data, "element_spec")
        history = model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            callbacks=cbs + list(callbacks), shuffle=shuffle,
                            verbose=0)  # the console line is run_report.EpochLine's
    except BaseException as exc:
        write_manifest(run_dir, extra={"status": "failed", "error": f"{type(exc).__name__}: "
                                                                    f"{exc}"[:2000]})
        raise
    final = {k: v[-1] for k, v in history.history.items() if v}
    write_manifest(run_dir, metrics={"final": final}, extra={"status": "finished"})
    return history
