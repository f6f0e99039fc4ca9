"""Provenance: what produced a file (run manifests, export sidecars), and atomic JSON writes.

One schema for every record the package writes next to an artefact::

    {
      "schema": "keras_deeplab.provenance/1",
      "kind": "run" | "saved_model" | "tflite" | ...,
      "created": ISO-8601 UTC timestamp,
      "git": {"commit": sha, "dirty": bool} or None,
      "environment": {"python", "platform", "keras", "backend", "keras_deeplab",
                      "tensorflow" (TF backend or TF importable)},
      ... fields of the record's own (config, metrics, model, parity, ...)
    }

This module imports nothing from the rest of the package (the version comes from
`keras_deeplab.version`), so every subpackage may use it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

from keras_deeplab.version import __version__

SCHEMA = "keras_deeplab.provenance/1"


def git_commit(path=None):
    """The git checkout holding ``path`` (default: this package's source).

    Returns:
        ``{"commit": sha, "dirty": bool}``, or None outside a git checkout or without git.
    """
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=path, capture_output=True, text=True, timeout=10).stdout
        return {"commit": sha, "dirty": bool(status.strip())} if sha else None
    except (OSError, subprocess.SubprocessError):
        return None


def jsonable(value):
    """Converts NumPy values, tuples, sets and non-finite floats to plain JSON values.

    NaN and +-inf become None (``null``), so the output is valid JSON for every parser;
    unknown objects become their ``str``.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, str) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    return str(value)


def environment():
    """Versions of Python, the platform, Keras, its backend, keras_deeplab and TensorFlow."""
    import keras

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "keras": keras.__version__, "backend": keras.backend.backend(),
           "keras_deeplab": __version__}
    if "tensorflow" in sys.modules or keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
    return env


def now():
    """The current UTC time as an ISO-8601 string with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(kind, **fields):
    """A provenance record of ``kind`` (see the module docstring), JSON-ready.

    Args:
        kind: str. What the record describes ("run", "saved_model", "tflite", ...).
        **fields: the record's own fields, converted with `jsonable`.

    Returns:
        dict.
    """
    record = {"schema": SCHEMA, "kind": str(kind), "created": now(), "git": git_commit(),
              "environment": environment()}
    record.update(jsonable(fields))
    return record


#: Marks the temporary files of `atomic_path`: ``.<stem>.tmp-<pid>-<ns><ext>``.
TEMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path):
    """Context manager for writing ``path`` atomically: the one atomic writer of the package.

    Yields a temporary path in the target's own folder, with the target's extension (so
    ``model.save``, ``save_weights`` and ``savefig`` accept it): ``.<stem>.tmp-<pid>-<ns><ext>``.
    When the block ends without an error the temporary file is fsynced and moved over
    ``path`` with ``os.replace`` (atomic on POSIX and Windows); on an error it is removed and
    ``path`` is untouched. A ``kill -9`` at any moment leaves the old file or the new one,
    never a partial one (a stale temporary file at most, which
    `keras_deeplab.training.checkpoints.remove_stale_temporaries` deletes).

    Example:
    >>> with atomic_path("run/best.keras") as tmp:
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    stem = name[: len(name) - len(ext)]
    tmp = os.path.join(folder, f".{stem}{TEMP_MARK}{os.getpid()}-{time.monotonic_ns()}{ext}")
    try:
        yield tmp
        with open(tmp, "rb") as f:  # data on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, obj, indent=2):
    """Writes ``obj`` as JSON to ``path`` through `atomic_path`: a reader sees the old file
    or the new one, never a partial one, even if the process is killed mid-write.

    Raises:
        ValueError: ``obj`` holds NaN/inf (pass it through `jsonable` first).
    """
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, sort_keys=False, allow_nan=False)
            f.write("\n")
    return path
