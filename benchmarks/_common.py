"""Benchmark helpers: timing, FLOP counting through TF's graph profiler, machine ceiling."""

import json
import os
import platform
import time

import numpy as np


def quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed(fn, warmup=2, iters=10, min_seconds=0.0):
    """Median seconds per call of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def graph_flops(concrete_fn):
    """FLOPs (2 x MACs) of a concrete function with static shapes, from TF's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete_fn)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return int(prof.total_float_ops)


def conv_ceiling_gflops(dtype="float32", seconds=2.0):
    """Achieved GFLOP/s of a large plain 3x3 convolution: this machine's practical ceiling."""
    import tensorflow as tf

    x = tf.random.normal((1, 65, 65, 512), dtype=dtype)
    k = tf.random.normal((3, 3, 512, 512), dtype=dtype)
    fn = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    sec = timed(lambda: fn().numpy(), warmup=2, iters=5, min_seconds=seconds)
    return 2 * 65 * 65 * 9 * 512 * 512 / sec / 1e9


# The instruction-set flags that decide which kernels TF/oneDNN/XNNPACK can use.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "asimd", "asimddp", "sve")


def cpu():
    """{"model", "simd_flags"} from /proc/cpuinfo (Linux); the machine name elsewhere.

    CPUs differ from machine to machine, so every result file records the flags that
    produced it (RESULTS.md quotes them with each table).
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "simd_flags": [f for f in SIMD_FLAGS if f in flags]}


def print_machine():
    """Prints the CPU model, core count, SIMD flags and load average: the first line of
    every benchmark run, so each table names the machine that produced it."""
    info = cpu()
    print(f"CPU: {info['model']}, {os.cpu_count()} cores, SIMD flags: {' '.join(info['simd_flags'])}; "
          f"load {load()}", flush=True)


def machine():
    import keras
    import tensorflow as tf

    info = cpu()
    return {
        "cpu": info["model"],
        "cpu_simd_flags": info["simd_flags"],
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def load():
    """The 1/5/15-minute load averages (``uptime``), recorded with every figure: on a
    shared machine a figure measured under load is provisional."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def import_torchvision():
    """Imports torchvision's pure-Python model code even where its compiled extension does
    not load against the installed torch (torchvision 0.28.0 on torch 2.13.0 CPU:
    ``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms``,
    which the extension failed to define, and raises). That submodule and
    ``torchvision.extension``'s op loading are only needed by the detection ops; they are
    pre-registered as empty modules when the plain import fails. Uses tests/_torchvision.py
    ([tv-resnet]'s helper for the tests) when it exists, so there is one workaround."""
    import importlib
    import sys
    import types

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.exists(os.path.join(repo, "tests", "_torchvision.py")):
        sys.path.insert(0, os.path.join(repo, "tests"))
        try:
            helper = importlib.import_module("_torchvision")
            for name in ("import_torchvision", "torchvision"):
                if callable(getattr(helper, name, None)):
                    return getattr(helper, name)()
        except Exception:  # noqa: BLE001 - fall back to the workaround below
            pass
    try:
        import torchvision

        return torchvision
    except (RuntimeError, ImportError, OSError):
        for name in list(sys.modules):
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision

        return torchvision


def torchvision_deeplabv3(num_classes=21, output_stride=16):
    """torchvision's DeepLabV3-ResNet50 built with our architecture: dilation in the last
    stage only at OS16 (``replace_stride_with_dilation=[False, False, True]``) and ASPP
    rates 6/12/18; at OS8 the last two stages and rates 12/24/36 (torchvision's own
    ``deeplabv3_resnet50``). Random weights, no auxiliary head. torchvision's head adds one
    3x3 256->256 conv + BN after the ASPP projection (+1.3 GFLOP at 513x513, ~1% of the
    model), which ours does not have."""
    import_torchvision()
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    if output_stride not in (8, 16):
        raise ValueError(f"output_stride={output_stride}: 8 or 16")
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    backbone = resnet50(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])
    backbone = IntermediateLayerGetter(backbone, return_layers={"layer4": "out"})
    return DeepLabV3(backbone, DeepLabHead(2048, num_classes, list(rates)), None)


def run_cases(script, cases, rounds, args=(), timeout=1800):
    """Runs ``script --child CASE *args`` for every case in a fresh process, interleaved
    over ``rounds`` (round r starts at case r, so no case always runs first), and returns
    {case: [result dict, ...]} from the JSON each child prints last, with the load average
    before each run under "load". A failed case records {"error": ...}."""
    import subprocess
    import sys

    out = {case: [] for case in cases}
    for r in range(rounds):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            before = load()
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            try:
                proc = subprocess.run([sys.executable, script, "--child", case, *args],
                                      capture_output=True, text=True, env=env, timeout=timeout)
                lines = proc.stdout.strip().splitlines()
                if proc.returncode != 0 or not lines:
                    result = {"error": proc.stderr.strip()[-1500:]}
                else:
                    result = json.loads(lines[-1])
            except subprocess.TimeoutExpired:
                result = {"error": f"timed out after {timeout} s"}
            result["load"] = before
            result["round"] = r
            out[case].append(result)
            status = result.get("error", "").splitlines()[-1:] or [
                ", ".join(f"{k}={v:.3g}" for k, v in result.items() if isinstance(v, float))]
            print(f"  round {r} {case}: {status[0]} (load {before})", flush=True)
    return out


def median_of(results, key):
    values = [r[key] for r in results if key in r]
    return float(np.median(values)) if values else float("nan")


def set_threads(threads, framework):
    """Caps the compute threads of one framework ("tensorflow" or "torch") in this process
    (None: the framework's default, one per core). Under load from other processes,
    PyTorch's OpenMP threads wait for each other and a 2-thread torch step ran ~10x slower
    than a 1-thread one on a shared 2-core machine, while TF's thread pool degraded far less:
    comparisons on a loaded machine use the same cap (1) for both."""
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


# Issue 16's targets: ours / torchvision in the same run, fp32 and bf16, inference and training.
TARGET_RATIO = 1.1


def verdict(ratios, runs, targets, quick=False):
    """The exit status of a benchmark script: 0 when every target is met, 1 otherwise.

    Args:
        ratios: {"a/b": ratio} measured in this run.
        runs: {case: [result dict, ...]}; a case with an "error" counts as a miss.
        targets: [("a/b", minimum ratio), ...]; a target whose cases were not run is skipped
            (reported as not checked).
        quick: smoke run (tiny models): targets are not checked, only failed cases.

    Prints one line per target (met / NOT met / not checked) and per failed case.
    """
    missed = 0
    for case, results in runs.items():
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            missed += 1
            print(f"FAILED case {case}: {errors[-1].splitlines()[-1] if errors[-1] else 'error'}")
    for name, minimum in ([] if quick else targets):
        if name not in ratios:
            print(f"target {name} >= x{minimum:.2f}: not checked (cases not run)")
            continue
        met = ratios[name] >= minimum
        missed += not met
        print(f"target {name} >= x{minimum:.2f}: {'met' if met else 'NOT met'} "
              f"(x{ratios[name]:.2f})")
    return 1 if missed else 0
