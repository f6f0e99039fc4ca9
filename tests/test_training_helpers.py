"""Shared helpers for the training tests (`run_python`: run code in a fresh interpreter) and
tests of the small training helpers (run manifests)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code, timeout=300, env=None, cwd=None):
    """Runs `code` in a fresh interpreter; returns the JSON printed on its last stdout line."""
    full_env = dict(os.environ)
    full_env.setdefault("KERAS_BACKEND", "tensorflow")
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         full_env.get("PYTHONPATH", "")])
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


# -- run manifests ------------------------------------------------------------------------


def test_manifest_uses_the_provenance_schema(tmp_path):
    import keras
    import numpy as np

    from keras_deeplab.provenance import SCHEMA
    from keras_deeplab.training.manifest import read_manifest, write_manifest

    run = tmp_path / "run1"
    write_manifest(str(run), config={"lr": np.float32(0.5), "sizes": (1, 2)},
                   dataset={"name": "toy"}, recipe="pytest")
    first = read_manifest(str(run))
    write_manifest(str(run), metrics={"final": {"val_miou": float("nan"), "loss": np.float64(1)}},
                   extra={"status": "finished", "schema": "overwritten?"})
    text = (run / "manifest.json").read_text()
    manifest = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert manifest["schema"] == SCHEMA and manifest["kind"] == "run"
    assert manifest["run"] == "run1" and manifest["created"] == first["created"]
    assert manifest["config"] == {"lr": 0.5, "sizes": [1, 2]} and manifest["recipe"] == "pytest"
    assert manifest["metrics"] == {"final": {"val_miou": None, "loss": 1.0}}
    assert manifest["status"] == "finished" and manifest["dataset"] == {"name": "toy"}
    # versions and commit, checked against keras itself and the git command line
    assert manifest["environment"]["keras"] == keras.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    if head.returncode == 0:  # a git checkout (CI and development): the commit is recorded
        assert manifest["git"]["commit"] == head.stdout.strip()
    else:
        assert manifest["git"] is None


# -- auxiliary-head targets ---------------------------------------------------------------


def test_with_aux_targets_keeps_images_masks_and_augment_params():
    import numpy as np
    import tensorflow as tf

    from keras_deeplab.training.aux import with_aux_targets
    from keras_deeplab.utils import AUGMENT_PARAMS

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, (2, 4, 4, 1)).astype(np.int32)
    p = rng.uniform(size=(2, 5)).astype(np.float32)
    forms = {
        "tuple": tf.data.Dataset.from_tensors((x, y)),
        "dict": tf.data.Dataset.from_tensors({"images": x, "segmentation_masks": y}),
        "device tuple": tf.data.Dataset.from_tensors(({"images": x, AUGMENT_PARAMS: p}, y)),
        "device dict": tf.data.Dataset.from_tensors(
            {"images": x, "segmentation_masks": y, AUGMENT_PARAMS: p}),
    }
    for name, ds in forms.items():
        inputs, targets = next(iter(with_aux_targets(ds)))
        assert set(targets) == {"logits", "aux_logits"}, name
        for t in targets.values():
            np.testing.assert_array_equal(t, y)
        if "device" in name:  # the parameters survive for DeviceAugmentedModel
            np.testing.assert_array_equal(inputs["images"], x)
            np.testing.assert_array_equal(inputs[AUGMENT_PARAMS], p)
        else:
            np.testing.assert_array_equal(inputs, x)
    listed = with_aux_targets([(x, y)])
    assert listed[0][0] is x and listed[0][1]["aux_logits"] is y
    with pytest.raises(ValueError, match="images and masks"):
        with_aux_targets([(x,)])


def test_atomic_path_replaces_whole_or_keeps_the_old_file(tmp_path):
    import os

    from keras_deeplab.provenance import TEMP_MARK, atomic_path

    target = tmp_path / "best.weights.h5"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".weights.h5")
        assert TEMP_MARK in os.path.basename(tmp)
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert target.read_bytes() == b"old"  # not visible before the block ends
    assert target.read_bytes() == b"new"
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5"]  # no temporary file left
