"""Peak resident memory (ru_maxrss) of inference on a full Cityscapes frame (1024x2048)
at OS16 and OS8, and of sliding-window evaluation (`kd.training.evaluate` with
``sliding_window``), each case in a fresh process.

DeepLabV3-ResNet50, 19 classes, random weights, fp32, batch 1. The "model only" case
imports TensorFlow and builds the model without running it: its peak is the baseline the
other cases add activations to ("above baseline"). The ``*_runner`` cases make exactly the
model call evaluation makes (`keras_deeplab.inference.runners.KerasRunner`, a Keras
``predict_on_batch``), on the whole frame or on one 769x769 window: evaluation's own memory
is its peak above the matching runner case.

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --quick      # 128x256 (smoke check)
    python benchmarks/bench_memory.py --cases model_only,eval_sliding_769   # a subset
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu, load, machine, run_cases, set_threads, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 1024, 2048
CASES = ["model_only", "infer_os16", "infer_os8", "infer_os16_runner", "infer_window_769_runner",
         "infer_window_769_os8_runner", "eval_sliding_769", "eval_sliding_769_os8", "eval_whole_os16"]


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(case, threads, quick=False):
    set_threads(threads, "tensorflow")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf

    import keras_deeplab as kd

    output_stride = 8 if case.startswith("infer") and "os8" in case else 16
    model = kd.models.DeepLabV3(num_classes=19, backbone="resnet50", output_stride=output_stride)
    rng = np.random.default_rng(0)
    h, w = (128, 256) if quick else (H, W)
    image = rng.uniform(0, 255, (1, h, w, 3)).astype("float32")
    after_build = peak_mib()
    start = time.perf_counter()
    out = {}
    if case.startswith("infer") and case.endswith("_runner"):
        from keras_deeplab.inference.runners import KerasRunner

        if "window" in case:  # one window, as sliding-window evaluation runs them
            size = 97 if quick else 769
            image = np.ascontiguousarray(image[:, :size, :size])
        out["input"] = list(image.shape[1:3])
        np.asarray(KerasRunner(model)(image))
    elif case.startswith("infer"):
        fn = tf.function(lambda t: model(t, training=False))
        np.asarray(fn(tf.constant(image)))
    elif case.startswith("eval"):
        mask = rng.integers(0, 19, (1, h, w, 1)).astype("int32")
        kwargs = {"sliding_window": 97 if quick else 769} if "sliding" in case else {}
        if case.endswith("_os8"):
            kwargs["output_stride"] = 8
        result = kd.training.evaluate(model, [(image, mask)], batch_size=1, progress=False, **kwargs)
        out["mean_iou"] = float(result["mean_iou"])
        out["evaluate_kwargs"] = {**kwargs, "batch_size": 1}
    out.update(peak_rss_mib=peak_mib(), after_build_mib=after_build, seconds=time.perf_counter() - start)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="128x256 images, 97 px windows (smoke check)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "memory.json"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.quick)))
        return
    info = cpu()
    print(f"CPU: {info['model']}, SIMD flags: {' '.join(info['simd_flags'])}; load {load()}", flush=True)
    runs = run_cases(os.path.abspath(__file__), args.cases.split(","), 1,
                     ["--threads", str(args.threads)] + (["--quick"] if args.quick else []))
    base = runs.get("model_only", [{}])[0].get("peak_rss_mib")
    print("\n| case | peak RSS (MiB) | above model-only baseline (MiB) | seconds | load (1-min) |")
    print("|---|---|---|---|---|")
    for case, (r,) in runs.items():
        if "error" in r:
            print(f"| {case} | failed: {r['error'].splitlines()[-1][:120]} | | | {r['load'][0]} |")
            continue
        above = f"{r['peak_rss_mib'] - base:.0f}" if base else "?"
        print(f"| {case} | {r['peak_rss_mib']:.0f} | {above} | {r['seconds']:.1f} | {r['load'][0]} |")
    write_json(args.out, {"machine": machine(), "image": [128, 256] if args.quick else [H, W], "runs": runs,
                          "command": "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
