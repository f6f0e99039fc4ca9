"""Training on several processes / machines: Keras' own multi-process data parallelism.

Keras 3's ``model.fit`` does not train under TensorFlow's ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585: every worker fails before step 1 with "Attempt to convert a value
(PerReplica...) to a Tensor"), so `kd.training.get_strategy("multi_worker")` refuses it and
points here. The working path is `keras.distribution.initialize` + `DataParallel` on the JAX
backend: every process runs the same script, feeds its share of each global batch, and the
gradients are all-reduced (JAX collectives; on CPUs through gloo).

``KERAS_BACKEND=jax``, then on every process::

    kd.training.initialize_multi_process("10.0.0.1:1234", num_processes=2, process_id=i)
    kd.training.jax_data_parallel()        # one mesh over every process's devices
    model = ...; model.compile(...)
    kd.training.fit(model, train_ds, ...)  # train_ds: this process's slice of each batch

Only the chief (process 0) writes checkpoints, backups, TensorBoard logs and the manifest
(`is_chief`).
"""

from __future__ import annotations

import json
import os
import socket
import time

import keras


class WorkersTimeoutError(TimeoutError):
    """The other processes of a multi-process run did not join in time."""


def is_chief():
    """True in the process that writes the run's files.

    JAX: ``jax.process_index() == 0`` (0 in a single-process run). TensorFlow: the task of
    ``TF_CONFIG`` of type "chief", or worker 0 of a cluster without a chief; True without
    ``TF_CONFIG``.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    spec = os.environ.get("TF_CONFIG")
    if not spec:
        return True
    config = json.loads(spec)
    task = config.get("task", {})
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in config.get("cluster", {})
    return not has_chief and task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def wait_for_port(address, timeout=300.0, num_processes=None, log=print, poll=0.5):
    """Blocks until ``host:port`` accepts a TCP connection, printing who is awaited.

    Raises:
        WorkersTimeoutError: after ``timeout`` seconds, naming the address.
    """
    host, port = address.rsplit(":", 1)
    waiting = f"{num_processes - 1} other worker(s)" if num_processes else "the coordinator"
    log(f"Waiting for {waiting}: coordinator {address} (timeout {timeout:.0f} s).")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=poll):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise WorkersTimeoutError(
                    f"The coordinator {address} did not answer within {timeout:.0f} s: start "
                    "process 0 (the coordinator) first, with the same --coordinator address, "
                    "or check the firewall.") from None
            time.sleep(poll)


def initialize_multi_process(coordinator, num_processes, process_id, timeout=300.0, log=print):
    """Joins a multi-process run: `keras.distribution.initialize` with a bounded wait.

    Process 0 hosts the coordinator at ``coordinator`` ("host:port", reachable from every
    machine); the others wait for it to open (``log``: "Waiting for N other worker(s)").
    Everyone then waits at most ``timeout`` seconds for all ``num_processes`` to join.

    Args:
        coordinator: str. "host:port" of process 0.
        num_processes: int. Processes in the run (>= 1).
        process_id: int. This process, in [0, num_processes).
        timeout: float. Seconds to wait for the others. Defaults to 300.

    Raises:
        ValueError: not the JAX backend, or a process id out of range.
        WorkersTimeoutError: the coordinator or a peer did not join within ``timeout``.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "Multi-process training runs on the JAX backend (KERAS_BACKEND=jax): Keras 3's fit "
            "does not support TensorFlow's MultiWorkerMirroredStrategy "
            "(keras-team/keras#20585).")
    num_processes, process_id = int(num_processes), int(process_id)
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is not in [0, {num_processes}).")
    import jax

    if _cpu_only():  # CPU all-reduce needs a collectives library
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if process_id != 0:
        wait_for_port(coordinator, timeout, num_processes, log=log)
    else:
        log(f"Coordinator at {coordinator}: waiting for {num_processes - 1} other worker(s) "
            f"(timeout {timeout:.0f} s).")
    try:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(timeout))
    except Exception as exc:  # jax raises XlaRuntimeError / RuntimeError on a timeout
        raise WorkersTimeoutError(
            f"Process {process_id} could not join the {num_processes}-process run at "
            f"{coordinator} within {timeout:.0f} s ({type(exc).__name__}: {exc}). Start "
            "every process with the same coordinator and num_processes.") from exc
    log(f"Process {process_id} of {num_processes} joined; "
        f"{jax.device_count()} device(s) in the run.")


def _cpu_only():
    """True when JAX would run on CPUs only (checked without initializing a backend)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0] == "cpu"
    try:
        import jax_cuda12_plugin  # noqa: F401

        return False
    except ImportError:
        return True
