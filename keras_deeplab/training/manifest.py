"""Run manifests: ``saved_models/<run>/manifest.json`` records what produced a model.

A manifest is a `keras_deeplab.provenance` record of kind ``"run"`` (the schema shared with
the export sidecars: ``schema``, ``kind``, ``created``, ``git``, ``environment``) plus the
run's own fields: ``run``, ``updated``, ``config``, ``dataset``, ``metrics``, ``recipe``,
``status`` ....
"""

from __future__ import annotations

import json
import math
import os

import keras

from keras_deeplab.provenance import jsonable, now, provenance, write_json_atomic

MANIFEST_NAME = "manifest.json"

# Written by `provenance` on every update; never carried over from the previous file.
_PROVENANCE_KEYS = ("schema", "kind", "created", "git", "environment")


def write_manifest(run_dir, config=None, dataset=None, metrics=None, recipe=None, extra=None):
    """Writes (or updates) ``<run_dir>/manifest.json`` atomically.

    Fields: ``config`` (the run's hyper-parameters), ``dataset`` (name, root, splits,
    sizes), ``metrics`` (final and best values, merged with the previous ones), ``recipe``
    (command line), ``git`` (commit and dirty flag), ``environment`` (versions), ``created``
    (first write) / ``updated`` timestamps, in the `keras_deeplab.provenance` schema with
    ``kind="run"``. Existing fields are kept unless given again; NaN/inf become null.

    Args:
        run_dir: str. The run directory (created).
        config, dataset, metrics, recipe: JSON-able values (NumPy values are converted) or
            None to keep the previous value.
        extra: dict or None. More top-level fields (e.g. ``{"status": "finished"}``).

    Returns:
        The path of the manifest.
    """
    os.makedirs(run_dir, exist_ok=True)
    previous = read_manifest(run_dir) or {}
    fields = {k: v for k, v in previous.items() if k not in _PROVENANCE_KEYS}
    fields.setdefault("run", os.path.basename(os.path.normpath(run_dir)))
    fields["updated"] = now()
    if config is not None:
        fields["config"] = config
    if dataset is not None:
        fields["dataset"] = dataset
    if metrics is not None:
        fields["metrics"] = {**fields.get("metrics", {}), **jsonable(metrics)}
    if recipe is not None:
        fields["recipe"] = recipe
    if extra:
        fields.update({k: v for k, v in extra.items() if k not in _PROVENANCE_KEYS})
    record = provenance("run", **fields)
    record["created"] = previous.get("created", record["created"])
    return write_json_atomic(os.path.join(run_dir, MANIFEST_NAME), record)


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
