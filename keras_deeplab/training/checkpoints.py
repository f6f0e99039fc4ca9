"""Crash-safe checkpoints: atomic model/weights writes and step-level backups of a run.

Every file a run owns is written to a temporary name in its own folder and then moved over
the target with `os.replace` (atomic on POSIX and Windows): a ``kill -9`` at any moment
leaves either the previous file or the new one, never a partial one. JSON files go through
`keras_deeplab.provenance.write_json_atomic`.

`RunBackup` replaces `keras.callbacks.BackupAndRestore` in `kd.training.fit`. Keras' callback
writes ``latest.weights.h5`` and ``training_metadata.json`` in place (a kill during the
write makes the run impossible to resume) and restarts the interrupted epoch from its first
step. `RunBackup` instead keeps the last ``keep`` (2: a double checkpoint) complete backups::

    backup/ckpt-000000120.weights.h5   model + optimizer state (atomic)
    backup/ckpt-000000120.json         epoch, step in the epoch, global step, size and
                                       SHA-256 of the weights file, RNG states (atomic,
                                       written after the weights: a backup without its
                                       .json is incomplete and ignored)

`restore_backup` takes the newest backup whose files are intact and says, naming the file,
which damaged backup it skipped.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time

import keras
import numpy as np

from keras_deeplab.provenance import TEMP_MARK, atomic_path, jsonable, write_json_atomic

BACKUP_PATTERN = re.compile(r"^ckpt-(\d+)\.json$")


def save_model_atomic(model, path):
    """``model.save(path)`` through `keras_deeplab.provenance.atomic_path`.

    Args:
        model: keras.Model.
        path: str. Target ending in ".keras".

    Returns:
        ``path``.
    """
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def save_weights_atomic(model, path):
    """``model.save_weights(path)`` (weights and optimizer state) through
    `keras_deeplab.provenance.atomic_path`; returns ``path``."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def remove_stale_temporaries(folder):
    """Deletes temporary files a killed writer left in ``folder``; returns their paths."""
    removed = []
    folder = glob.escape(folder)
    for path in sorted(glob.glob(os.path.join(folder, f".*{TEMP_MARK}*"))):
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def sha256(path, chunk=1 << 22):
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose ``.keras`` / ``.weights.h5`` writes are atomic.

    Same arguments as Keras' callback (``initial_value_threshold`` restores the best value
    of a resumed run). Epochs without the monitored value (validation every N epochs) are
    skipped quietly when ``save_best_only``.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only and (logs is None or self.monitor not in logs):
            return
        super().on_epoch_end(epoch, logs)

    def _save_model(self, epoch, batch, logs):
        logs = logs or {}
        current = logs.get(self.monitor)
        if self.save_best_only and (current is None or not np.isfinite(float(current))):
            return
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):  # Keras' best logic
            if self.save_weights_only:
                save_weights_atomic(self.model, filepath)
            else:
                save_model_atomic(self.model, filepath)


def _seed_states(model):
    """Dropout & co. draw from `keras.random.SeedGenerator` states that ``save_weights``
    does not store; a resumed run needs them to continue the same random stream."""
    return {v.path: np.asarray(keras.ops.convert_to_numpy(v)).tolist()
            for v in model.variables if "seed_generator_state" in v.path}


def _set_seed_states(model, states):
    for v in model.variables:
        if v.path in (states or {}):
            v.assign(np.asarray(states[v.path], dtype=v.dtype))


def list_backups(backup_dir):
    """``[(global_step, json_path), ...]`` newest first."""
    found = []
    for name in os.listdir(backup_dir) if os.path.isdir(backup_dir) else ():
        match = BACKUP_PATTERN.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(backup_dir, name)))
    return sorted(found, reverse=True)


class DamagedBackupError(RuntimeError):
    """No backup in ``backup/`` could be read back."""


def restore_backup(model, backup_dir, log=print):
    """Loads the newest intact backup of ``backup_dir`` into ``model`` (weights, optimizer
    state, RNG states).

    A backup is damaged when its JSON does not parse, its weights file is missing, has
    another size or SHA-256 than recorded, or does not load; the next older one is tried and
    ``log`` is told which file was skipped and why.

    Returns:
        The backup's metadata dict (``epoch``, ``step``, ``global_step``, ``path`` ...), or
        None when ``backup_dir`` holds no backup.

    Raises:
        DamagedBackupError: backups exist but none is intact (each one named with the reason).
    """
    backups = list_backups(backup_dir)
    if not backups:
        return None
    if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    problems = []
    for _, meta_path in backups:
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            weights = os.path.join(backup_dir, meta["weights"])
            if not os.path.exists(weights):
                raise FileNotFoundError(f"{weights} is missing")
            size = os.path.getsize(weights)
            if size != meta["bytes"]:
                raise ValueError(f"{weights} has {size} bytes, {meta['bytes']} were written")
            if sha256(weights) != meta["sha256"]:
                raise ValueError(f"{weights} does not match its recorded SHA-256")
            model.load_weights(weights)
            _set_seed_states(model, meta.get("seed_states"))
        except Exception as exc:  # noqa: BLE001 - every kind of damage falls back
            reason = f"{type(exc).__name__}: {exc}"
            problems.append(f"{meta_path} ({reason})")
            log(f"Backup {meta_path} is damaged ({reason}); trying the previous backup.")
            continue
        meta["path"] = meta_path
        if problems:
            log(f"Resuming from the previous good backup {meta_path} "
                f"(epoch {meta['epoch'] + 1}, step {meta['step']}).")
        return meta
    raise DamagedBackupError(
        f"No backup in {backup_dir} can be read: {'; '.join(problems)}. Delete {backup_dir} "
        "to restart from the last saved epoch, or start again with overwrite=True "
        "(--overwrite).")


class RunBackup(keras.callbacks.Callback):
    """Step-level, double, atomic backups of a training run (see the module docstring).

    A backup is written every ``save_freq`` optimizer steps and at the end of every epoch
    (after validation, checkpoints and the manifest, when it is the last callback). The
    backup folder is deleted when training completes all its epochs.

    Args:
        backup_dir: str. Folder of the backups (``<run>/backup``).
        save_freq: int or None. Steps between backups; None: only at epoch ends.
        keep: int. Complete backups kept. Defaults to 2 (the previous one is the fallback
            when the newest is damaged).
        steps_per_epoch: int or None. Recorded with each backup.
        first_epoch_offset: int. Steps already done in the first epoch of this `fit` call
            (a run resumed mid-epoch). Defaults to 0.
    """

    def __init__(self, backup_dir, save_freq=None, keep=2, steps_per_epoch=None,
                 first_epoch_offset=0, delete_on_end=True):
        super().__init__()
        if save_freq is not None and int(save_freq) <= 0:
            raise ValueError(f"save_freq must be a positive number of steps or None, got "
                             f"{save_freq!r}.")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = None if save_freq is None else int(save_freq)
        self.keep = max(1, int(keep))
        self.steps_per_epoch = steps_per_epoch
        self.first_epoch_offset = int(first_epoch_offset)
        self.delete_on_end = delete_on_end
        self.completed = False
        self._epoch = 0
        self._offset = 0
        self._step = 0
        self._first_epoch = True

    def _global_step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = self.first_epoch_offset if self._first_epoch else 0
        self._first_epoch = False
        self._step = self._offset

    def on_train_batch_end(self, batch, logs=None):
        self._step = self._offset + batch + 1
        if self.save_freq and self._global_step() % self.save_freq == 0:
            self.save(self._epoch, self._step)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        """Writes one backup: training resumes at step ``step`` of epoch ``epoch`` (0-based)."""
        os.makedirs(self.backup_dir, exist_ok=True)
        global_step = self._global_step()
        name = f"ckpt-{global_step:09d}"
        weights = os.path.join(self.backup_dir, f"{name}.weights.h5")
        save_weights_atomic(self.model, weights)
        meta = {"epoch": int(epoch), "step": int(step), "global_step": global_step,
                "steps_per_epoch": self.steps_per_epoch, "weights": os.path.basename(weights),
                "bytes": os.path.getsize(weights), "sha256": sha256(weights),
                "seed_states": _seed_states(self.model), "time": time.time()}
        write_json_atomic(os.path.join(self.backup_dir, f"{name}.json"), jsonable(meta))
        self._prune(global_step)

    def _prune(self, newest):
        backups = list_backups(self.backup_dir)
        keep = {step for step, _ in backups[: self.keep]}
        for name in os.listdir(self.backup_dir):
            match = re.match(r"^ckpt-(\d+)\.(json|weights\.h5)$", name)
            if match and int(match.group(1)) not in keep and int(match.group(1)) <= newest:
                try:
                    os.remove(os.path.join(self.backup_dir, name))
                except OSError:
                    pass

    def on_train_end(self, logs=None):
        if self.completed and self.delete_on_end and os.path.isdir(self.backup_dir):
            import shutil

            shutil.rmtree(self.backup_dir, ignore_errors=True)
