"""Robust training: crash-safe checkpoints, step-level resume, evaluation, TensorBoard, manifest.

`fit` wraps `model.fit` with the callbacks a long segmentation run needs (see
`training_callbacks` for the list and their order) and with checks that fail loudly: an
empty training set, dataset classes vs model classes, an empty validation set, non-finite
validation logits, a run that completes 0 steps, a resume directory written by a different
configuration / dataset size / steps per epoch, a run that already finished.

Layout of a run directory ``saved_models/<run>/`` (every file written atomically: a
temporary file in the same folder, then `os.replace`)::

    manifest.json     config, dataset, fingerprint, git commit, versions, metrics, status,
                      resumes
    backup/           the last two step-level backups (`checkpoints.RunBackup`), deleted
                      once the run is finished
    best.keras        best model by val_miou (when there is a validation set)
    last.keras        model after the last epoch
    logs/             TensorBoard (scalars + masks/ with prediction panels)

A killed run started again with the same arguments resumes at the step of its newest intact
backup (the previous one when the newest is damaged): weights, optimizer state, learning-rate
schedule step, dropout RNG state, the best ``val_miou`` so far (from the manifest) and, for a
`tf.data` training set with one pass per epoch, the same data order as an uninterrupted run
(the epochs already done are fast-forwarded by creating their iterators, which advances the
pipeline's shuffle/augmentation seeds exactly as `model.fit` did; the batches done in the
interrupted epoch are skipped).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_deeplab.data.batches import iterate_batches
from keras_deeplab.training import run_report
from keras_deeplab.training._utils import model_num_classes
from keras_deeplab.training.checkpoints import (
    AtomicModelCheckpoint,
    RunBackup,
    list_backups,
    remove_stale_temporaries,
    restore_backup,
)
from keras_deeplab.training.evaluate_mean_iou import EvaluateMeanIoU
from keras_deeplab.training.manifest import (
    ManifestWriter,
    jsonable,
    read_manifest,
    write_manifest,
)
from keras_deeplab.training.multiworker import is_chief
from keras_deeplab.training.stop_on_nan import StopOnNaN
from keras_deeplab.training.tensorboard_masks import TensorBoardMasks

# Config keys that may change between a crashed run and its resumption.
RESUME_IGNORED_KEYS = ("data_dir", "run_dir", "runs_dir", "output_dir", "verbose", "progress",
                       "resume", "overwrite", "backup_steps", "accept_changes")

#: Optimizer steps between step-level backups: about 3-4 minutes at the Cityscapes recipe
#: defaults on one GPU (benchmarks/RESULTS.md, "Work lost on kill -9").
DEFAULT_BACKUP_STEPS = 200


class ZeroStepsError(RuntimeError):
    """`fit` completed no training step (nothing was trained)."""


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
    """Raises ValueError if ``dataset`` yields no batch (``name`` says which set)."""
    hint = (" With drop_remainder (training batches), a set smaller than one batch gives no "
            "batch at all: use more images or a smaller --batch-size."
            if name == "training" else "")
    card = getattr(dataset, "cardinality", None)
    if card is not None:
        try:
            if int(card()) == 0:
                raise ValueError(f"The {name} dataset is empty (cardinality 0).{hint}")
        except TypeError:
            pass
    for _ in iterate_batches(dataset, max_batches=1):
        return
    raise ValueError(f"The {name} dataset is empty: it yielded no batches. Check the split name, "
                     f"the data directory and any take()/filter() applied to it.{hint}")


def _flatten(config, prefix=""):
    """``{"data": {"crop_size": 769}}`` -> ``{"data.crop_size": 769}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changes(previous, current, ignored_keys):
    """``["optim.base_lr: 0.01 -> 0.02", ...]`` between two (nested) dicts."""
    previous, current = _flatten(previous or {}), _flatten(jsonable(current or {}))
    keys = {k for k in set(previous) | set(current)
            if k.rsplit(".", 1)[-1] not in ignored_keys}
    return [f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in sorted(keys)
            if previous.get(k) != current.get(k)]


def resume_changes(run_dir, config=None, fingerprint=None, ignored_keys=RESUME_IGNORED_KEYS):
    """What differs between the run recorded in ``run_dir`` and this one.

    Compares ``config`` with the manifest's ``"config"`` (when given) and ``fingerprint``
    (model class and size, optimizer and learning-rate schedule, epochs, steps per epoch,
    batches in the training set; see `run_fingerprint`) with its ``"fingerprint"``.

    Returns:
        list of str, one ``"key: old -> new"`` per change; empty without a manifest.
    """
    manifest = read_manifest(run_dir)
    if manifest is None:
        return []
    changes = []
    if config is not None:
        changes += _changes(manifest.get("config"), config, ignored_keys)
    if fingerprint is not None and manifest.get("fingerprint") is not None:
        changes += _changes({"fingerprint": manifest["fingerprint"]},
                            {"fingerprint": fingerprint}, ignored_keys)
    return changes


def check_resume(run_dir, config, overwrite=False, ignored_keys=RESUME_IGNORED_KEYS,
                 fingerprint=None, accept_changes=False):
    """Decides whether ``run_dir`` can be used for a run with ``config``.

    Args:
        run_dir: str. The run directory.
        config: dict or None. This run's configuration (compared with the manifest's).
        overwrite: bool. Start again: nothing is compared. Defaults to False.
        ignored_keys: keys whose change is harmless (paths, verbosity, backup interval).
        fingerprint: dict or None. `run_fingerprint` of this run (compared with the
            manifest's: model, optimizer/schedule, epochs, steps per epoch, dataset size).
        accept_changes: bool. Resume despite changes (`fit` records them in the manifest's
            ``"resumes"``). Defaults to False.

    Returns:
        True when there is a backup to resume from.

    Raises:
        ValueError: the directory was written by a different configuration, dataset size or
            steps per epoch (each change listed as ``key: old -> new``), or holds a finished
            run (unless ``overwrite``).
    """
    manifest = read_manifest(run_dir)
    if manifest is None or overwrite:
        return False
    backup = bool(list_backups(os.path.join(run_dir, "backup")))
    changes = resume_changes(run_dir, config, fingerprint, ignored_keys)
    if changes and not accept_changes:
        raise ValueError(
            f"{run_dir} holds a run with a different configuration ({', '.join(changes)}). "
            "Use another run name, overwrite=True (--overwrite) to start it again, or "
            "accept_changes=True (--accept-changes) to resume it anyway (the changes are "
            "recorded in its manifest).")
    if manifest.get("status") == "finished" and not backup:
        raise ValueError(f"{run_dir} holds a finished run. Use another run name, or "
                         "overwrite=True (--overwrite) to train it again.")
    return backup


def run_fingerprint(model, epochs, steps_per_epoch, train_batches):
    """What a resumed run must share with the run it continues, besides its config.

    Returns:
        dict: ``model`` (class), ``parameters``, ``optimizer`` (its config, learning-rate
        schedule included, without the name), ``epochs``, ``steps_per_epoch``,
        ``train_batches`` (batches in one pass over the training set, None if unknown).
    """
    optimizer = jsonable(keras.optimizers.serialize(model.optimizer))
    if isinstance(optimizer, dict):
        optimizer.get("config", {}).pop("name", None)
    return {"model": type(model).__name__, "parameters": int(model.count_params()),
            "optimizer": optimizer, "epochs": int(epochs),
            "steps_per_epoch": None if steps_per_epoch is None else int(steps_per_epoch),
            "train_batches": None if train_batches is None else int(train_batches)}


def training_callbacks(run_dir, val_data=None, every_n_epochs=1, sliding_window=None,
                       scales=(1.0,), flip=False, class_names=None, config=None, dataset=None,
                       recipe=None, tensorboard=True, save_last=True, verbose=1,
                       best_value=None, backup_steps=DEFAULT_BACKUP_STEPS, steps_per_epoch=None,
                       chief=True):
    """The callbacks of a robust run, in the order they must run.

    1. `StopOnNaN`: stop (and raise) on a non-finite loss, naming the step.
    2. `EvaluateMeanIoU` (with ``val_data``): writes ``val_miou`` and per-class IoU to logs
       (raises on non-finite validation logits).
    3. `AtomicModelCheckpoint` ``best.keras`` on ``val_miou``, starting from ``best_value``
       (a resumed run's best so far) (with ``val_data``).
    4. `AtomicModelCheckpoint` ``last.keras`` every epoch (``save_last``).
    5. `keras.callbacks.TensorBoard` in ``logs/`` and `TensorBoardMasks` (``tensorboard``).
    6. `ManifestWriter`: ``manifest.json`` with config, dataset, commit and metrics, then
       `run_report.run_callbacks`: ``history.csv``, ``report.md``, ``training_curve.png``
       and (``verbose``) the compact console line `run_report.EpochLine`.
    7. `RunBackup` in ``backup/``: every ``backup_steps`` steps and after every epoch (last,
       so that an epoch's backup follows its checkpoints and manifest).

    With ``chief=False`` (a non-chief process of a multi-process run) only 1-2 are returned:
    the chief writes every file.
    """
    callbacks = [StopOnNaN()]
    if val_data is not None:
        callbacks.append(EvaluateMeanIoU(val_data, every_n_epochs=every_n_epochs,
                                         sliding_window=sliding_window, scales=scales,
                                         flip=flip, class_names=class_names, verbose=verbose))
    if not chief:
        return callbacks
    if val_data is not None:
        callbacks.append(AtomicModelCheckpoint(
            os.path.join(run_dir, "best.keras"), monitor="val_miou", mode="max",
            save_best_only=True, verbose=0, initial_value_threshold=best_value))
    if save_last:
        callbacks.append(AtomicModelCheckpoint(os.path.join(run_dir, "last.keras"), verbose=0))
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
    # history.csv, report.md, training_curve.png, the console line (run_report.py)
    callbacks += run_report.run_callbacks(run_dir, callbacks, config=config,
                                          class_names=class_names, verbose=verbose)
    callbacks.append(RunBackup(os.path.join(run_dir, "backup"), save_freq=backup_steps,
                               steps_per_epoch=steps_per_epoch))
    return callbacks


def _batches_per_pass(train_data):
    """Batches in one pass over ``train_data``: int, -1 (repeats forever) or None."""
    card = getattr(train_data, "cardinality", None)
    if card is not None:
        value = int(card())
        return None if value == -2 else value  # tf.data.UNKNOWN_CARDINALITY
    try:
        return len(train_data)
    except TypeError:
        return None


def _plan(train_data, epochs, steps, batches, epoch, offset, log):
    """The `model.fit` calls that continue a run at step ``offset`` of epoch ``epoch``.

    Returns a list of ``(data, initial_epoch, epochs, steps_per_epoch, offset)``.
    """
    is_tf = hasattr(train_data, "element_spec")
    exact = is_tf and batches is not None and batches > 0 and steps == batches
    data = train_data
    if is_tf and batches == -1 and epoch * steps + offset:
        data = train_data.skip(epoch * steps + offset)
        log(f"Skipping the {epoch * steps + offset} batches already trained on in the "
            "repeating training set.")
    elif is_tf and batches not in (None, -1):
        # one iterator for the whole run, epochs of exactly `steps` batches, and no "ran out
        # of data" when Keras' DataParallel shards the set over processes (unknown length)
        data = train_data.repeat()
    if (epoch or offset) and not exact and not (batches == -1 and not offset):
        log("Note: the resumed run sees the training data in a different order from an "
            "uninterrupted one (exact only for a tf.data set with steps_per_epoch equal to its "
            "number of batches); weights, optimizer and schedule continue exactly.")
    if exact:
        for _ in range(epoch):  # advance the shuffle/augmentation seeds as fit did per epoch
            iter(train_data)
    calls = []
    if offset and epoch < epochs:
        first = data
        if exact:  # the rest of the interrupted epoch; unknown cardinality: no extra iterator
            first = train_data.skip(offset).filter(lambda *_: True)
        calls.append((first, epoch, epoch + 1, steps - offset, offset))
        epoch += 1
        if batches == -1:
            data = train_data.skip(epoch * steps)
    if epoch < epochs:
        calls.append((data, epoch, epochs, steps, 0))
    return calls


def check_steps_per_execution(model, steps, backup_steps, offset=0):
    """Checks that a model compiled with ``steps_per_execution=k > 1`` keeps epochs and
    backups exact.

    Keras runs ``k`` optimizer steps per call and calls the callbacks once per call, and the
    last call of an epoch still runs ``k`` steps; so ``k`` must divide the steps per epoch
    (epochs of exactly ``steps`` steps) and the backup interval (backups, and so resumed
    runs, fall on multiples of ``k``).

    Args:
        model: a compiled `keras.Model` (``model.steps_per_execution``, default 1).
        steps: int or None. Steps per epoch (None: unknown, not checked).
        backup_steps: int or None. Steps between step-level backups.
        offset: int. Steps already done in the epoch a resumed run starts in (its first
            `model.fit` call runs ``steps - offset`` steps). Defaults to 0.

    Raises:
        ValueError: ``k`` does not divide ``steps``, ``backup_steps`` or ``offset`` (a run
            resumed with another ``k`` than it was backed up with); the message names the
            numbers and the fix.
    """
    k = int(getattr(model, "steps_per_execution", 1) or 1)
    if k <= 1:
        return
    if steps is not None and steps % k:
        raise ValueError(
            f"The model was compiled with steps_per_execution={k}, which does not divide the "
            f"{steps} steps per epoch: Keras would run {-(-steps // k) * k} steps per epoch. "
            f"Compile with a divisor of {steps} (e.g. {math.gcd(steps, k)}) or change "
            "steps_per_epoch.")
    if backup_steps and backup_steps % k:
        raise ValueError(
            f"The model was compiled with steps_per_execution={k}, which does not divide "
            f"backup_steps={backup_steps}: backups are written between calls of {k} steps. "
            f"Pass backup_steps as a multiple of {k} (e.g. {k * max(1, backup_steps // k)}).")
    if offset % k:
        raise ValueError(
            f"The run resumes at step {offset} of its epoch, which is not a multiple of "
            f"steps_per_execution={k}: the rest of the epoch ({steps} - {offset} steps) cannot "
            f"run in calls of {k}. Resume with the steps_per_execution the run was backed up "
            f"with, or one that divides {offset} (e.g. {math.gcd(offset, k)}).")


def fit(model, train_data, epochs, run_dir, val_data=None, num_classes=None, config=None,
        dataset=None, recipe=None, steps_per_epoch=None, every_n_epochs=1, sliding_window=None,
        scales=(1.0,), flip=False, class_names=None, tensorboard=True, overwrite=False,
        callbacks=(), verbose=1, backup_steps=DEFAULT_BACKUP_STEPS, accept_changes=False):
    """Trains a compiled model robustly; returns the `keras.callbacks.History`.

    Started again with the same arguments after a crash or ``kill -9``, it resumes at the
    newest intact step-level backup (see the module docstring).

    A model compiled with ``steps_per_execution=k`` runs ``k`` steps per call and the
    callbacks once per call (the demo ran 489 s with k=25 against 530 s with k=1,
    `benchmarks/RESULTS.md`); ``k`` must divide the steps per epoch, ``backup_steps`` and,
    on resume, the steps already done in the epoch (`check_steps_per_execution`).

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
        steps_per_epoch: int or None. None: one pass over ``train_data``. A finite
            `tf.data` set with another number of batches is repeated, so every epoch has
            exactly ``steps_per_epoch`` steps.
        every_n_epochs, sliding_window, scales, flip, class_names: validation settings
            (see `keras_deeplab.callbacks.EvaluateMeanIoU`).
        tensorboard: bool. Write TensorBoard logs. Defaults to True.
        overwrite: bool. Start again in a run directory that holds another or a finished
            run. Defaults to False.
        callbacks: extra callbacks, run after the built-in ones.
        verbose: int. Defaults to 1.
        backup_steps: int or None. Optimizer steps between step-level backups (also one
            after every epoch); None: only after epochs. Defaults to `DEFAULT_BACKUP_STEPS`.
        accept_changes: bool. Resume although the configuration, dataset size or steps per
            epoch changed; the changes are recorded in the manifest. Defaults to False.

    Raises:
        ValueError: empty training or validation set, classes mismatch, run directory of
            another configuration (the changes listed) or of a finished run, a
            ``steps_per_execution`` that does not divide the steps per epoch,
            ``backup_steps`` or a resumed run's step in its epoch
            (`check_steps_per_execution`).
        ZeroStepsError: training ran but completed no step.
        FloatingPointError: non-finite training loss (`NonFiniteLossError`) or validation
            logits.
        checkpoints.DamagedBackupError: no backup of the run can be read.

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
    check_not_empty(train_data, "training")
    check_dataset_classes(model, train_data, num_classes)
    if val_data is not None:
        check_not_empty(val_data)
    batches = _batches_per_pass(train_data)
    if batches is None and hasattr(train_data, "element_spec"):
        import tensorflow as tf

        batches = sum(1 for _ in train_data)  # count once: epochs of a known length
        train_data = train_data.apply(tf.data.experimental.assert_cardinality(batches))
    if batches == -1 and steps_per_epoch is None:
        raise ValueError("The training dataset repeats forever: pass steps_per_epoch "
                         "(--steps-per-epoch).")
    steps = int(steps_per_epoch or batches) if (steps_per_epoch or batches) else None
    if steps is not None and steps <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps}.")
    check_steps_per_execution(model, steps, backup_steps)
    chief = is_chief()
    log = print if verbose else (lambda *_: None)
    backup_dir = os.path.join(run_dir, "backup")
    if overwrite and chief and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)
    if not model.built:
        raise ValueError("Build the model (call it on a batch) before kd.training.fit.")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    fingerprint = run_fingerprint(model, epochs, steps, batches)
    changes = resume_changes(run_dir, config, fingerprint) if not overwrite else []
    resuming = check_resume(run_dir, config, overwrite=overwrite, fingerprint=fingerprint,
                            accept_changes=accept_changes)
    previous = None if overwrite else read_manifest(run_dir)
    if overwrite and read_manifest(run_dir) is not None and chief:
        os.remove(os.path.join(run_dir, "manifest.json"))
    os.makedirs(run_dir, exist_ok=True)
    if chief:
        for folder in (run_dir, backup_dir):
            for path in remove_stale_temporaries(folder):  # printed even with verbose=0
                print(f"Removed {path}, left by a write that was interrupted.")
    epoch, offset, best = 0, 0, None
    resume = None
    if resuming:
        resume = restore_backup(model, backup_dir, log=print)  # damage is always reported
        epoch, offset = int(resume["epoch"]), int(resume["step"])
        if offset >= (steps or offset + 1):
            epoch, offset = epoch + 1, 0
        check_steps_per_execution(model, steps, backup_steps, offset)
        best = ((previous or {}).get("metrics") or {}).get("best_val_miou")
        log(f"Resuming the run in {run_dir} at epoch {epoch + 1}, step {offset} "
            f"(global step {resume['global_step']}, backup {resume['path']}"
            f"{'' if best is None else f', best val_miou so far {best:.4f}'}).")
    extra = {"status": "running", "epochs": int(epochs), "fingerprint": fingerprint}
    if resuming:
        record = {"epoch": epoch, "step": offset, "global_step": resume["global_step"],
                  "backup": os.path.basename(resume["path"])}
        if changes:
            record["changes"] = changes
        extra["resumes"] = list((previous or {}).get("resumes", [])) + [record]
    if chief:
        write_manifest(run_dir, config=config, dataset=dataset, recipe=recipe, extra=extra)
    # Other processes of a multi-process run go through the same saves (on JAX, Keras'
    # saving runs collectives every process must join) into a private scratch folder that
    # is deleted afterwards: only the chief writes the run directory.
    scratch = None if chief else tempfile.mkdtemp(prefix="keras_deeplab_worker_")
    cbs = training_callbacks(run_dir if chief else scratch, val_data,
                             every_n_epochs=every_n_epochs,
                             sliding_window=sliding_window, scales=scales, flip=flip,
                             class_names=class_names, config=config, dataset=dataset,
                             recipe=recipe, tensorboard=tensorboard, verbose=verbose,
                             best_value=best, backup_steps=backup_steps, steps_per_epoch=steps)
    backup = next((c for c in cbs if isinstance(c, RunBackup)), None)
    # tf.data pipelines shuffle themselves (Keras warns when asked to shuffle them).
    shuffle = not hasattr(train_data, "element_spec")
    start_step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    history = None
    try:
        calls = _plan(train_data, epochs, steps, batches, epoch, offset, log)
        for data, first, last, n, done in calls:
            if backup is not None:
                backup.first_epoch_offset = done
                backup._first_epoch = True
            h = model.fit(data, initial_epoch=first, epochs=last, steps_per_epoch=n,
                          callbacks=cbs + list(callbacks), shuffle=shuffle,
                          verbose=0)  # the console line is run_report.EpochLine's
            if history is not None:  # one History over the calls
                for key, values in history.history.items():
                    h.history[key] = values + h.history.get(key, [])
                h.epoch = history.epoch + h.epoch
            history = h
        trained = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) - start_step
        if calls and trained == 0:
            raise ZeroStepsError(
                f"Training completed 0 steps (epochs {epoch + 1}..{epochs}, {steps} steps per "
                "epoch): the training set yielded no batch. Nothing was trained; check the "
                "dataset size against the batch size and steps_per_epoch.")
    except BaseException as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if chief:
            write_manifest(run_dir, extra={"status": "failed", "error": f"{type(exc).__name__}: "
                                                                        f"{exc}"[:2000]})
        raise
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    if history is None:  # the backup was taken after the last epoch: nothing left to train
        history = keras.callbacks.History()
        history.history, history.epoch = {}, []
    if chief:
        final = {k: v[-1] for k, v in history.history.items() if v}
        write_manifest(run_dir, metrics={"final": final} if final else None,
                       extra={"status": "finished"})
        shutil.rmtree(backup_dir, ignore_errors=True)  # only after the manifest says finished
    return history
