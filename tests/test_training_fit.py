"""Robust training: resume after SIGKILL, run-directory checks, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_deeplab as kd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_SCRIPT = r"""
import json, os, sys, time
import numpy as np
import keras
import tensorflow as tf
import keras_deeplab as kd

run_dir, log_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
labels = (images[..., :1] > 128).astype(np.int32)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255.0),
                          keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                          keras.layers.Conv2D(2, 1)])
model.compile(optimizer=kd.training.poly_sgd(0.1, total_steps=epochs * 4),
              loss=kd.losses.CrossEntropy())


class Log(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._begin = epoch

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        with open(log_path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "epoch": epoch,
                                "step": step, "loss": float(logs["loss"])}) + "\n")
        time.sleep(1.5)  # leaves time to be killed between epochs


train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
kd.training.fit(model, train, epochs, run_dir,
                val_data=[(images[:2], labels[:2])], config={"lr": 0.1, "epochs": epochs},
                tensorboard=False, callbacks=[Log()], verbose=0)
print("DONE")
"""


def _read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.large
def test_sigkill_then_resume(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    run_dir, log = str(tmp_path / "run"), str(tmp_path / "log.jsonl")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, str(script), run_dir, log, "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while len(_read_log(log)) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "training did not reach epoch 2"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # during the sleep after epoch 2: its backup is written
    proc.wait()
    first = _read_log(log)
    assert [r["epoch"] for r in first] == [0, 1]
    manifest = json.loads(open(os.path.join(run_dir, "manifest.json")).read())
    assert manifest["status"] == "running"

    # Resuming with another config is refused ...
    out = subprocess.run([sys.executable, str(script), run_dir, log, "7"], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode != 0 and "different configuration" in out.stderr
    assert "epochs: 5 -> 7" in out.stderr
    # ... the same command resumes at epoch 3 with the optimizer step of epoch 2.
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    records = _read_log(log)
    second = records[2:]
    assert [r["epoch"] for r in second] == [2, 3, 4]
    assert second[0]["step"] == first[-1]["step"] + 4  # 4 batches per epoch, continued
    manifest = json.loads(open(os.path.join(run_dir, "manifest.json")).read())
    assert manifest["status"] == "finished" and manifest["config"] == {"lr": 0.1, "epochs": 5}
    assert "val_miou" in manifest["metrics"]["final"]
    assert manifest["metrics"]["best_val_miou_epoch"] >= 1
    assert not os.path.exists(os.path.join(run_dir, "backup"))  # removed when finished
    assert os.path.exists(os.path.join(run_dir, "best.keras"))
    # A finished run is not silently trained again.
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode != 0 and "finished run" in out.stderr


def _model(num_classes=3):
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(num_classes, 1)])
    model.compile(optimizer="sgd", loss=kd.losses.CrossEntropy())
    return model


def test_fit_bad_input(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.float32)
    labels = np.zeros((2, 8, 8, 1), np.int32)
    model = _model(3)
    with pytest.raises(ValueError, match="dataset has 5 classes but the model predicts 3"):
        kd.training.fit(model, [(images, labels)], 1, str(tmp_path / "a"), num_classes=5)
    bad = labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="label 7 .* model predicts 3 classes"):
        kd.training.fit(model, [(images, bad)], 1, str(tmp_path / "b"))
    import tensorflow as tf

    empty = tf.data.Dataset.from_tensor_slices((images, labels)).batch(1).take(0)
    with pytest.raises(ValueError, match="validation dataset is empty"):
        kd.training.fit(model, [(images, labels)], 1, str(tmp_path / "c"), val_data=empty)
    with pytest.raises(ValueError, match="validation dataset is empty"):
        kd.training.fit(model, [(images, labels)], 1, str(tmp_path / "c"), val_data=[])
    with pytest.raises(ValueError, match="Compile the model"):
        kd.training.fit(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1)]),
                        [(images, labels)], 1, str(tmp_path / "d"))


def test_fit_writes_run_directory(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 8, 8, 1)).astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    model = _model(3)
    run = str(tmp_path / "run")
    kd.training.fit(model, train, 2, run, val_data=train, config={"a": 1},
                    dataset={"name": "toy"}, recipe="pytest", verbose=0)
    manifest = kd.training.read_manifest(run)
    assert manifest["status"] == "finished" and manifest["dataset"] == {"name": "toy"}
    assert manifest["recipe"] == "pytest" and manifest["epochs"] == 2
    final = kd.training.evaluate(model, train, progress=False)["mean_iou"]
    assert manifest["metrics"]["final"]["val_miou"] == pytest.approx(final)
    for name in ("best.keras", "last.keras", "logs"):
        assert os.path.exists(os.path.join(run, name)), name
    restored = keras.models.load_model(os.path.join(run, "last.keras"))
    np.testing.assert_allclose(restored.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="different configuration"):
        kd.training.fit(_model(3), train, 2, run, config={"a": 2}, verbose=0)
    kd.training.fit(_model(3), train, 1, run, config={"a": 2}, overwrite=True, verbose=0)
    assert kd.training.read_manifest(run)["config"] == {"a": 2}
