"""Training throughput (images/s) of DeepLabV3-ResNet50, OS16, 513x513 crops, batch 2.

Measures full training steps (forward, CE loss, backward, SGD+momentum update with kernel
weight decay) through `model.train_on_batch` on random data, in float32 and mixed_bfloat16
(each precision in a fresh subprocess, so the dtype policy and memory start clean).

    python benchmarks/bench_training.py                 # full measurement (minutes on a CPU)
    python benchmarks/bench_training.py --quick         # tiny model, 64 px: checks the script

Results are printed as a Markdown table and written to ``--output`` (JSON), to be copied
into benchmarks/RESULTS.md with the command.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(precision, crop, batch, steps, warmup, quick):
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    import keras_deeplab as kd

    kd.training.set_precision(precision)
    if quick:
        model = kd.models.DeepLabV3(num_classes=21, backbone="resnet18",
                                    backbone_kwargs={"base_filters": 8}, aspp_filters=16,
                                    output_stride=16)
    else:
        model = kd.models.DeepLabV3(num_classes=21, backbone="resnet50", output_stride=16,
                                    backbone_weights=None)
    model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=10_000),
                  loss=kd.losses.CrossEntropy())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    masks = rng.integers(0, 21, (batch, crop, crop, 1)).astype("int32")
    for _ in range(warmup):
        model.train_on_batch(images, masks)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model.train_on_batch(images, masks)
        times.append(time.perf_counter() - start)
    loss = float(np.asarray(loss).reshape(-1)[0])
    median = float(np.median(times))
    return {"precision": precision, "model": "DeepLabV3-ResNet50 OS16" if not quick
            else "DeepLabV3-ResNet18/8 OS16 (quick)", "crop": crop, "batch": batch,
            "steps": steps, "warmup": warmup, "median_step_s": median,
            "images_per_s": batch / median, "mean_step_s": float(np.mean(times)),
            "final_loss": loss, "loss_finite": bool(np.isfinite(loss)),
            "keras": keras.__version__, "backend": keras.backend.backend()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, 64 px, 2 steps")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--crop", type=int, default=513)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results",
                                                    "bench_training.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.crop, args.steps, args.warmup = 64, 2, 1
    if args.child:
        result = measure(args.child, args.crop, args.batch, args.steps, args.warmup, args.quick)
        print(json.dumps(result))
        return result
    results = []
    for precision in args.precisions.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", precision,
               "--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup)] + (["--quick"] if args.quick else [])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise SystemExit(f"{precision} run failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    record = {"command": "python benchmarks/bench_training.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=2)
    print("| model | precision | crop | batch | step (s, median) | images/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['precision']} | {r['crop']} | {r['batch']} | "
              f"{r['median_step_s']:.3f} | {r['images_per_s']:.2f} |")
    print(f"(written to {args.output})")
    return record


if __name__ == "__main__":
    main()
