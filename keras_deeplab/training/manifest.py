"""Run manifests: ``saved_models/<run>/manifest.json`` records what produced a model."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys

import keras
import numpy as np

MANIFEST_NAME = "manifest.json"


def git_commit(path=None):
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (or None)."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=path, capture_output=True, text=True, timeout=10).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def jsonable(value):
    """Converts NumPy values, tuples and non-finite floats to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def environment():
    """Versions of Python, Keras and the backend."""
    env = {"python": sys.version.split()[0], "keras": keras.__version__,
           "backend": keras.backend.backend(), "platform": platform.platform()}
    try:
        from keras_deeplab import __version__

        env["keras_deeplab"] = __version__
    except ImportError:  # pragma: no cover
        pass
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
    return env


def write_manifest(run_dir, config=None, dataset=None, metrics=None, recipe=None, extra=None):
    """Writes (or updates) ``<run_dir>/manifest.json``.

    Fields: ``config`` (the run's hyper-parameters), ``dataset`` (name, root, splits,
    sizes), ``metrics`` (final and best values), ``recipe`` (command line), ``git``
    (commit and dirty flag), ``environment`` (versions), ``created`` / ``updated``
    timestamps. Existing fields are kept unless given again.

    Returns:
        The path of the manifest.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, MANIFEST_NAME)
    manifest = read_manifest(run_dir) or {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest.setdefault("created", now)
    manifest["updated"] = now
    manifest.setdefault("run", os.path.basename(os.path.normpath(run_dir)))
    if config is not None:
        manifest["config"] = jsonable(config)
    if dataset is not None:
        manifest["dataset"] = jsonable(dataset)
    if metrics is not None:
        manifest["metrics"] = {**manifest.get("metrics", {}), **jsonable(metrics)}
    if recipe is not None:
        manifest["recipe"] = jsonable(recipe)
    if extra:
        manifest.update(jsonable(extra))
    manifest["git"] = git_commit()
    manifest["environment"] = environment()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(tmp, path)
    return path


def read_manifest(run_dir):
    """The manifest of a run directory as a dict, or None if it has none."""
    path = os.path.join(run_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class ManifestWriter(keras.callbacks.Callback):
    """Keeps ``<run_dir>/manifest.json`` up to date during training.

    At the start it writes the config and dataset; after every epoch the last logs (loss,
    metrics, ``val_miou`` ...), the epoch and the best ``monitor`` value seen.

    Args:
        run_dir: str. Run directory, e.g. "saved_models/deeplabv3plus_cityscapes".
        config: dict. Hyper-parameters of the run.
        dataset: dict. Dataset description.
        monitor: str. Metric whose best value is recorded. Defaults to "val_miou".
        mode: "max" or "min". Defaults to "max".
        recipe: optional command line or recipe name.

    Example:
    ```python
    model.fit(train, callbacks=[kd.callbacks.ManifestWriter("saved_models/run1", config)])
    ```
    """

    def __init__(self, run_dir, config=None, dataset=None, monitor="val_miou", mode="max",
                 recipe=None):
        super().__init__()
        self.run_dir = os.fspath(run_dir)
        self.config = config
        self.dataset = dataset
        self.monitor = monitor
        self.mode = mode
        self.recipe = recipe
        previous = (read_manifest(self.run_dir) or {}).get("metrics", {})
        self.best = previous.get(f"best_{monitor}")

    def on_train_begin(self, logs=None):
        write_manifest(self.run_dir, config=self.config, dataset=self.dataset,
                       recipe=self.recipe)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        metrics = {"epoch": epoch + 1, "last": logs}
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(float(value)):
            better = (self.best is None or (float(value) > self.best if self.mode == "max"
                                            else float(value) < self.best))
            if better:
                self.best = float(value)
                metrics[f"best_{self.monitor}"] = self.best
                metrics[f"best_{self.monitor}_epoch"] = epoch + 1
        write_manifest(self.run_dir, metrics=metrics)
