"""Issue 14, Found 5: multi-node training fails loudly on TensorFlow, never hangs, and only
the chief writes a run's files."""

import importlib
import json
import os
import socket
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_deeplab as kd
from keras_deeplab.training import multiworker

fit_module = importlib.import_module("keras_deeplab.training.fit")  # (kd.training.fit: function)


def test_multi_worker_strategy_is_refused_with_the_working_path():
    # Keras 3's fit crashes inside Keras under MultiWorkerMirroredStrategy
    # (keras-team/keras#20585): refuse before any cluster is formed.
    with pytest.raises(ValueError) as info:
        kd.training.get_strategy("multi_worker")
    message = str(info.value)
    assert "keras-team/keras#20585" in message
    assert "KERAS_BACKEND=jax" in message and "initialize_multi_process" in message


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_peer_times_out_with_a_waiting_message():
    # Found 5: a worker whose peer never starts blocked forever with no output.
    messages = []
    address = f"127.0.0.1:{_free_port()}"  # nobody listens there
    start = time.monotonic()
    with pytest.raises(multiworker.WorkersTimeoutError, match=address):
        multiworker.wait_for_port(address, timeout=1.0, num_processes=2, log=messages.append)
    assert time.monotonic() - start < 10
    assert messages == [f"Waiting for 1 other worker(s): coordinator {address} (timeout 1 s)."]


def test_wait_for_port_returns_once_the_coordinator_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        multiworker.wait_for_port(f"127.0.0.1:{port}", timeout=5, log=lambda m: None)


def test_initialize_multi_process_needs_jax_here():
    if keras.backend.backend() == "jax":
        pytest.skip("this checks the TensorFlow-backend error")  # CI's default backend is TF
    with pytest.raises(ValueError, match="JAX backend"):
        multiworker.initialize_multi_process("127.0.0.1:1", 2, 1, timeout=1)


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_is_chief_from_tf_config(monkeypatch, tf_config, chief):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TF_CONFIG is the TensorFlow backend's cluster description")
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert multiworker.is_chief() is chief


def test_only_the_chief_writes_run_files(tmp_path, monkeypatch):
    # Found 5: two workers sharing a run folder corrupted manifest.json.
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    y = (x[..., :1] > 128).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)

    def model():
        m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Conv2D(2, 1)])
        m.compile(optimizer="sgd", loss=kd.losses.CrossEntropy())
        return m

    monkeypatch.setattr(fit_module, "is_chief", lambda: False)
    worker = model()
    kd.training.fit(worker, train, 2, str(tmp_path / "run"), val_data=train, verbose=0,
                    backup_steps=1)
    assert int(worker.optimizer.iterations.numpy()) == 4  # it trained ...
    assert os.listdir(tmp_path / "run") == []  # ... and wrote nothing
    monkeypatch.setattr(fit_module, "is_chief", lambda: True)
    kd.training.fit(model(), train, 2, str(tmp_path / "run"), val_data=train, verbose=0,
                    tensorboard=False)
    assert {"manifest.json", "last.keras", "best.keras"} <= set(os.listdir(tmp_path / "run"))
