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
