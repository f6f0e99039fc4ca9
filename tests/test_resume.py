"""Issue 14: crash-safe checkpoints, mid-epoch resume, honest resume, failing loudly.

Each "Found" item of the issue has a test here (or in tests/test_multiworker.py):
1. checkpoints not crash-safe -> `test_fault_injected_write_*` (kill -9 inside every kind of
   write, via tests/_resume_worker.py's pausing hook) and `test_damaged_backup_*`;
2. a kill loses the partial epoch -> `test_kill_mid_epoch_resumes_to_the_same_weights`;
3. resume corrupts or mixes runs -> `test_resume_keeps_best_so_far`,
   `test_resume_refuses_*`, `test_accept_changes_is_recorded`;
4. runs that trained nothing report success -> `test_fail_loudly_*`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_deeplab as kd
from keras_deeplab.training import checkpoints
from keras_deeplab.training.fit import ZeroStepsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_resume_worker.py")
ENV = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
TIMEOUT = 240


def _run(tmp, run_dir, out, *flags):
    return subprocess.run([sys.executable, WORKER, str(run_dir), str(out), *flags], env=ENV,
                          cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT)


def _run_until_paused(tmp, run_dir, out, *flags):
    """Starts the worker, waits until its hook pauses, kills it with SIGKILL."""
    paused = os.path.join(os.path.dirname(os.path.abspath(run_dir)), "paused")
    if os.path.exists(paused):
        os.remove(paused)
    proc = subprocess.Popen([sys.executable, WORKER, str(run_dir), str(out), *flags], env=ENV,
                            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT
    while not os.path.exists(paused):
        if proc.poll() is not None:
            raise AssertionError("worker ended before the pause:\n"
                                 + proc.stdout.read().decode()[-3000:])
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("worker never paused (a write not done through os.replace?)")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(paused) as f:
        return f.read()


def _weights(path):
    data = np.load(path)
    return [data[k] for k in sorted(data.files)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Final weights of the worker's run trained without interruption."""
    tmp = tmp_path_factory.mktemp("full")
    out = _run(tmp, tmp / "run", tmp / "full.npz")
    assert out.returncode == 0 and "DONE" in out.stdout, out.stderr[-3000:]
    manifest = kd.training.read_manifest(str(tmp / "run"))
    assert manifest["status"] == "finished" and "resumes" not in manifest
    return _weights(tmp / "full.npz")


def _assert_same_weights(path, reference):
    weights = _weights(path)
    assert len(weights) == len(reference)
    for got, want in zip(weights, reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.large
def test_steps_per_execution_trains_the_same_and_resumes_exactly(tmp_path, uninterrupted):
    # compile(steps_per_execution=2): 3 calls of 2 steps per epoch, callbacks every 2 steps.
    # The uninterrupted run ends with the weights of the one-step-per-call run; killed after
    # step 10 (a call's end), the step-10 backup is the newest and the resumed run ends there too.
    out = _run(tmp_path, tmp_path / "full", tmp_path / "full.npz", "--steps-per-execution", "2")
    assert out.returncode == 0 and "DONE" in out.stdout, out.stderr[-3000:]
    _assert_same_weights(tmp_path / "full.npz", uninterrupted)
    run = tmp_path / "run"
    assert _run_until_paused(tmp_path, run, tmp_path / "x.npz", "--kill-at-step", "10",
                             "--steps-per-execution", "2") == "10"
    assert [s for s, _ in checkpoints.list_backups(str(run / "backup"))] == [10, 8]
    out = _run(tmp_path, run, tmp_path / "resumed.npz", "--steps-per-execution", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_weights(tmp_path / "resumed.npz", uninterrupted)
    assert kd.training.read_manifest(str(run))["resumes"][0]["global_step"] == 10


@pytest.mark.large
def test_resume_with_another_steps_per_execution_is_refused_when_it_would_overrun(
        tmp_path, uninterrupted):
    # Backed up at every step, killed after step 9 = epoch 2, step 3: the rest of that epoch
    # (3 steps) cannot run in calls of 2, so Keras would train 4. Refused, nothing changed;
    # resumed with one step per call it ends with the uninterrupted weights.
    run = tmp_path / "run"
    assert _run_until_paused(tmp_path, run, tmp_path / "x.npz", "--kill-at-step", "9",
                             "--backup-steps", "1") == "9"
    out = _run(tmp_path, run, tmp_path / "bad.npz", "--steps-per-execution", "2",
               "--backup-steps", "2")
    assert out.returncode != 0
    assert ("resumes at step 3 of its epoch, which is not a multiple of "
            "steps_per_execution=2") in out.stderr
    assert [s for s, _ in checkpoints.list_backups(str(run / "backup"))][0] == 9
    out = _run(tmp_path, run, tmp_path / "resumed.npz", "--backup-steps", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_weights(tmp_path / "resumed.npz", uninterrupted)


def test_steps_per_execution_must_divide_epochs_and_backups(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 1)])
    model.compile(optimizer="sgd", loss=kd.losses.CrossEntropy(), steps_per_execution=4)
    images = np.zeros((12, 8, 8, 3), "float32")
    masks = np.zeros((12, 8, 8, 1), "int32")
    train = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)  # 6 batches
    with pytest.raises(ValueError, match=r"steps_per_execution=4, which does not divide the 6 "
                                         r"steps per epoch: Keras would run 8"):
        kd.training.fit(model, train, 1, str(tmp_path / "a"), tensorboard=False, verbose=0)
    train = train.unbatch().batch(3)  # 4 batches; backups every 6 steps
    with pytest.raises(ValueError, match=r"does not divide backup_steps=6.*multiple of 4 "
                                         r"\(e\.g\. 4\)"):
        kd.training.fit(model, train, 1, str(tmp_path / "b"), tensorboard=False, verbose=0,
                        backup_steps=6)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


@pytest.mark.large
def test_kill_mid_epoch_resumes_to_the_same_weights(tmp_path, uninterrupted):
    # 12 images, batch 2: 6 steps per epoch; backups every 2 steps; killed after step 9
    # (epoch 2, step 3): the step-8 backup is the newest, so 1 step is lost, not 3.
    run = tmp_path / "run"
    assert _run_until_paused(tmp_path, run, tmp_path / "x.npz", "--kill-at-step", "9") == "9"
    backups = [step for step, _ in checkpoints.list_backups(str(run / "backup"))]
    assert backups == [8, 6]  # double checkpoint: the newest two
    out = _run(tmp_path, run, tmp_path / "resumed.npz")
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_weights(tmp_path / "resumed.npz", uninterrupted)
    manifest = kd.training.read_manifest(str(run))
    assert manifest["status"] == "finished"
    assert manifest["resumes"] == [{"epoch": 1, "step": 2, "global_step": 8,
                                    "backup": "ckpt-000000008.json"}]
    assert not os.path.exists(run / "backup")


# name fragment of the target : which write of it to interrupt (1-based)
FAULTS = {
    "last.keras": "last.keras:2",
    "best.keras": "best.keras:1",
    "backup weights": "weights.h5:4",
    "backup metadata": "ckpt-000000006.json:1",
    "manifest": "manifest.json:4",
}


@pytest.mark.large
@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_injected_write_loses_nothing(tmp_path, uninterrupted, kind):
    run = tmp_path / "run"
    before = {}
    where = _run_until_paused(tmp_path, run, tmp_path / "x.npz", "--fault", FAULTS[kind])
    src, dst = [p.strip() for p in where.split("->")]
    assert os.path.dirname(src) == os.path.dirname(dst)  # temporary file in the same folder
    name = os.path.basename(dst)
    # The target holds the previous complete version (or does not exist yet), never a
    # partial file.
    if os.path.exists(dst):
        before[name] = os.path.getsize(dst)
        if name.endswith(".keras"):
            keras.models.load_model(dst)
        elif name.endswith(".json"):
            with open(dst) as f:
                json.load(f)
    out = _run(tmp_path, run, tmp_path / "resumed.npz")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert f"Removed {src}" in out.stdout  # the half-written temporary file is cleaned up
    _assert_same_weights(tmp_path / "resumed.npz", uninterrupted)
    manifest = kd.training.read_manifest(str(run))
    assert manifest["status"] == "finished"
    keras.models.load_model(str(run / "last.keras"))
    keras.models.load_model(str(run / "best.keras"))
    assert not [f for f in os.listdir(run) if checkpoints.TEMP_MARK in f]


def _tiny_model(lr=0.1):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.Dropout(0.2), keras.layers.Conv2D(3, 1)])
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                  loss=kd.losses.CrossEntropy())
    return model


def _toy(n=8, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32")
    y = (x[..., :1] > 128).astype("int32") + (x[..., 1:2] > 200).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)


def _backups(tmp_path, model):
    """Two backups (steps 2 and 4) written by RunBackup; returns their json paths."""
    backup = checkpoints.RunBackup(str(tmp_path / "backup"), save_freq=2)
    model.fit(_toy(), epochs=1, callbacks=[backup], verbose=0)
    return [p for _, p in checkpoints.list_backups(str(tmp_path / "backup"))]


def test_damaged_backup_falls_back_to_the_previous_one(tmp_path):
    model = _tiny_model()
    newest, previous = _backups(tmp_path, model)
    assert newest.endswith("ckpt-000000004.json") and previous.endswith("ckpt-000000002.json")
    # the state of step 2, as a reference independent of the restore code
    import h5py

    with h5py.File(previous.replace(".json", ".weights.h5")) as f:
        want = np.asarray(f["layers/conv2d/vars/0"])  # layer order: rescaling, conv2d
    weights = newest.replace(".json", ".weights.h5")
    with open(weights, "r+b") as f:  # a torn write: half the file
        f.truncate(os.path.getsize(weights) // 2)
    messages = []
    fresh = _tiny_model()
    meta = checkpoints.restore_backup(fresh, str(tmp_path / "backup"), log=messages.append)
    assert meta["global_step"] == 2 and meta["path"] == previous
    assert int(fresh.optimizer.iterations.numpy()) == 2
    np.testing.assert_array_equal(fresh.layers[1].kernel.numpy(), want)
    assert any(newest in m and "damaged" in m for m in messages)
    assert any(f"previous good backup {previous}" in m for m in messages)


def test_damaged_backup_metadata_falls_back(tmp_path):
    model = _tiny_model()
    newest, previous = _backups(tmp_path, model)
    open(newest, "w").close()  # the empty JSON an in-place write left behind (Found 1)
    messages = []
    meta = checkpoints.restore_backup(_tiny_model(), str(tmp_path / "backup"),
                                      log=messages.append)
    assert meta["path"] == previous
    assert any(newest in m and "JSONDecodeError" in m for m in messages)


def test_all_backups_damaged_is_an_error_naming_them(tmp_path):
    newest, previous = _backups(tmp_path, _tiny_model())
    for path in (newest, previous):
        weights = path.replace(".json", ".weights.h5")
        with open(weights, "r+b") as f:  # one flipped byte: same size, other content
            f.seek(os.path.getsize(weights) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(checkpoints.DamagedBackupError) as info:
        checkpoints.restore_backup(_tiny_model(), str(tmp_path / "backup"), log=lambda m: None)
    assert newest in str(info.value) and previous in str(info.value)
    assert "SHA-256" in str(info.value)


class _CrashAfter(keras.callbacks.Callback):
    """Simulates a crash after the backup of epoch ``epoch`` (runs after RunBackup)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated crash")


def _crashed_run(run, epochs=3, data=None):
    with pytest.raises(KeyboardInterrupt):
        kd.training.fit(_tiny_model(), data or _toy(), epochs, str(run), val_data=_toy(2),
                        tensorboard=False, verbose=0, callbacks=[_CrashAfter(0)])
    manifest = kd.training.read_manifest(str(run))
    assert manifest["status"] == "failed"
    return manifest


def test_resume_keeps_best_so_far(tmp_path):
    run = tmp_path / "run"
    _crashed_run(run)
    best = run / "best.keras"
    digest = checkpoints.sha256(best)
    # The manifest's best so far is the threshold of the resumed run: no later epoch beats
    # an mIoU of 1, so best.keras must stay the file it is (before: overwritten by a worse
    # model on the first resumed epoch).
    manifest = kd.training.read_manifest(str(run))
    assert manifest["metrics"]["best_val_miou"] is not None
    kd.training.write_manifest(str(run), metrics={"best_val_miou": 1.0})
    kd.training.fit(_tiny_model(), _toy(), 3, str(run), val_data=_toy(2), tensorboard=False,
                    verbose=0)
    assert checkpoints.sha256(best) == digest
    assert kd.training.read_manifest(str(run))["status"] == "finished"


def test_resume_refuses_another_learning_rate_without_config(tmp_path):
    run = tmp_path / "run"
    _crashed_run(run)
    with pytest.raises(ValueError, match=r"different configuration.*learning_rate: 0\.1\d* -> 0\.2"):
        kd.training.fit(_tiny_model(lr=0.2), _toy(), 3, str(run), val_data=_toy(2),
                        tensorboard=False, verbose=0)


def test_resume_refuses_another_dataset_size(tmp_path):
    run = tmp_path / "run"
    _crashed_run(run)
    with pytest.raises(ValueError, match=r"steps_per_epoch: 4 -> 8.*train_batches: 4 -> 8"):
        kd.training.fit(_tiny_model(), _toy(16), 3, str(run), val_data=_toy(2),
                        tensorboard=False, verbose=0)
    with pytest.raises(ValueError, match=r"epochs: 3 -> 5"):
        kd.training.fit(_tiny_model(), _toy(), 5, str(run), val_data=_toy(2),
                        tensorboard=False, verbose=0)


def test_resume_refuses_another_config(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kd.training.fit(_tiny_model(), _toy(), 2, str(run), config={"optim": {"base_lr": 0.1}},
                        tensorboard=False, verbose=0, callbacks=[_CrashAfter(0)])
    with pytest.raises(ValueError, match=r"optim\.base_lr: 0\.1 -> 0\.2"):
        kd.training.fit(_tiny_model(), _toy(), 2, str(run), config={"optim": {"base_lr": 0.2}},
                        tensorboard=False, verbose=0)


def test_accept_changes_is_recorded(tmp_path):
    run = tmp_path / "run"
    _crashed_run(run)
    kd.training.fit(_tiny_model(), _toy(16), 3, str(run), val_data=_toy(2), tensorboard=False,
                    verbose=0, accept_changes=True)
    manifest = kd.training.read_manifest(str(run))
    assert manifest["status"] == "finished"
    (resume,) = manifest["resumes"]
    assert resume["epoch"] == 1 and resume["step"] == 0 and resume["global_step"] == 4
    assert "fingerprint.train_batches: 4 -> 8" in resume["changes"]
    assert manifest["fingerprint"]["train_batches"] == 8


def test_fail_loudly_on_a_training_set_smaller_than_a_batch(tmp_path):
    # Found 4: 3 images with batch 8 gave 0 steps and status "finished".
    train = _toy(3, batch=8)
    with pytest.raises(ValueError, match="training dataset is empty.*smaller than one batch"):
        kd.training.fit(_tiny_model(), train, 1, str(tmp_path / "run"), verbose=0,
                        tensorboard=False)
    assert not os.path.exists(tmp_path / "run" / "last.keras")


def test_fail_loudly_on_non_finite_validation_logits(tmp_path):
    # Found 4: all-NaN validation images gave a plausible val_miou (argmax of NaN = 0).
    x = np.full((2, 8, 8, 3), np.nan, "float32")
    y = np.zeros((2, 8, 8, 1), "int32")
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    with pytest.raises(FloatingPointError, match="not finite"):
        kd.training.fit(_tiny_model(), _toy(), 1, str(tmp_path / "run"), val_data=val,
                        verbose=0, tensorboard=False)
    manifest = kd.training.read_manifest(str(tmp_path / "run"))
    assert manifest["status"] == "failed" and "FloatingPointError" in manifest["error"]
    assert not os.path.exists(tmp_path / "run" / "best.keras")


class _NoTraining(keras.Sequential):
    """A model whose fit returns without training (a data source that dries up)."""

    def fit(self, *args, **kwargs):
        history = keras.callbacks.History()
        history.history, history.epoch = {}, []
        return history


def test_fail_loudly_when_no_step_completes(tmp_path):
    model = _NoTraining([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1)])
    model.compile(optimizer="sgd", loss=kd.losses.CrossEntropy())
    with pytest.raises(ZeroStepsError, match="0 steps"):
        kd.training.fit(model, _toy(), 2, str(tmp_path / "run"), verbose=0, tensorboard=False)
    assert kd.training.read_manifest(str(tmp_path / "run"))["status"] == "failed"


def test_step_backups_and_epoch_backup(tmp_path):
    model = _tiny_model()
    backup = checkpoints.RunBackup(str(tmp_path / "b"), save_freq=3, keep=2, steps_per_epoch=4)
    model.fit(_toy(), epochs=2, callbacks=[backup], verbose=0)
    # steps 3, 4 (epoch end), 6, 8 (epoch end): the newest two are kept
    found = checkpoints.list_backups(str(tmp_path / "b"))
    assert [s for s, _ in found] == [8, 6]
    with open(found[1][1]) as f:
        meta = json.load(f)
    assert (meta["epoch"], meta["step"], meta["global_step"]) == (1, 2, 6)
    assert sorted(os.listdir(tmp_path / "b")) == [
        "ckpt-000000006.json", "ckpt-000000006.weights.h5", "ckpt-000000008.json",
        "ckpt-000000008.weights.h5"]


def test_atomic_save_leaves_the_old_file_when_the_write_fails(tmp_path):
    model = _tiny_model()
    path = str(tmp_path / "m.keras")
    checkpoints.save_model_atomic(model, path)
    digest = checkpoints.sha256(path)

    class Broken(keras.Sequential):
        def save(self, filepath, *a, **k):
            with open(filepath, "wb") as f:
                f.write(b"partial")
            raise OSError("disk full")

    broken = Broken([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1)])
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_model_atomic(broken, path)
    assert checkpoints.sha256(path) == digest
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file left
