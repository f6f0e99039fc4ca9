"""Where the time of one step goes: op-level self time of ours (TF profiler) and of
torchvision's same-architecture DeepLabV3 (torch.profiler), grouped into the same
categories, so a gap in bench_inference.py / bench_training.py can be named.

    python benchmarks/profile_step.py --mode train --precision bf16 --threads 1
    python benchmarks/profile_step.py --mode infer --precision fp32

Each framework runs in its own fresh process (``--child``); both are profiled over
``--steps`` steps after ``--warmup`` steps. DeepLabV3-ResNet50, OS16, 513x513, batch 2
(train: SGD momentum, cross-entropy) or 1 (infer). Prints ms per step per category and the
top op types of each framework; writes benchmarks/results/profile_<mode>_<precision>.json.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu, load, set_threads, torchvision_deeplabv3, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (category, substrings of the lower-cased op type); the first match wins.
CATEGORIES = [
    ("conv backward (dilated gradient path: space-to-batch)", ("spacetobatch", "batchtospace")),
    ("conv backward", ("backpropinput", "backpropfilter", "convolution_backward", "conv2d_backward",
                       "conv_backward", "backprop")),
    ("conv forward", ("conv2d", "convolution", "conv")),
    ("batch norm", ("batchnorm", "batch_norm")),
    ("casts / copies", ("cast", "_to_copy", "copy_", "contiguous", "clone", "transpose")),
    ("resize", ("resize", "upsample")),
    ("loss (softmax cross-entropy)", ("softmax", "nll_loss", "crossentropy", "cross_entropy")),
    ("optimizer / elementwise", ("assign", "resourceapply", "sgd", "mul", "add", "sub", "relu",
                                 "threshold", "select", "where", "fill", "zero")),
]


def categorize(op_type):
    name = op_type.lower()
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other"


def data(batch, size):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"),
            rng.integers(0, 21, (batch, size, size, 1)).astype("int32"))


def profile_ours(args):
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    import keras_deeplab as kd

    kd.training.set_precision("mixed_bfloat16" if args.precision == "bf16" else "float32")
    model = kd.models.DeepLabV3(num_classes=21, backbone="resnet50", output_stride=16)
    images, masks = data(args.batch, args.size)
    if args.mode == "train":
        model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=10_000), loss=kd.losses.CrossEntropy())

        def step():
            return model.train_on_batch(images, masks)
    else:
        fn = tf.function(lambda t: model(t, training=False))
        x = tf.constant(images)

        def step():
            return np.asarray(fn(x))
    for _ in range(args.warmup):
        step()
    logdir = tempfile.mkdtemp(prefix="kd_profile_")
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        step()
    tf.profiler.experimental.stop()
    xplane = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1:]
    raw, ok = plugin.xspace_to_tools_data(xplane, "framework_op_stats", {})
    table = json.loads(raw)[0]
    cols = [c["id"] for c in table["cols"]]
    per_type = defaultdict(float)
    for row in table["rows"]:
        rec = dict(zip(cols, [c["v"] if isinstance(c, dict) else c for c in row["c"]]))
        if rec.get("host_or_device", "").lower().startswith("host") and rec["type"] not in ("IDLE",):
            per_type[rec["type"]] += rec["total_self_time"] / 1e3 / args.steps  # ms per step
    return dict(per_type)


def profile_torchvision(args):
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile

    model = torchvision_deeplabv3(21, 16)
    images, masks = data(args.batch, args.size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous() / 255.0
    y = torch.from_numpy(masks[..., 0]).long()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" \
        else contextlib.nullcontext
    if args.mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x)["out"], y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast():
                model(x)
    for _ in range(args.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    per_type = {}
    for evt in prof.key_averages():
        # leaf ops only (self time), so nested aten calls are not counted twice
        if evt.self_cpu_time_total > 0:
            per_type[evt.key] = evt.self_cpu_time_total / 1e3 / args.steps
    return per_type


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--batch", type=int, default=None, help="default 2 (train) / 1 (infer)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--child", choices=("ours", "torchvision"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.batch = args.batch or (2 if args.mode == "train" else 1)
    if args.child:
        set_threads(args.threads, "torch" if args.child == "torchvision" else "tensorflow")
        fn = profile_torchvision if args.child == "torchvision" else profile_ours
        print(json.dumps(fn(args)))
        return
    out = {"cpu": cpu(), "args": vars(args), "load_before": load()}
    for fw in ("ours", "torchvision"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", fw] + [
            a for k, v in vars(args).items() if k not in ("child", "out") and v is not None
            for a in (f"--{k}", str(v))]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if proc.returncode != 0:
            raise SystemExit(f"{fw} failed:\n{proc.stderr[-3000:]}")
        out[fw] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_after"] = load()
    cats = {fw: defaultdict(float) for fw in ("ours", "torchvision")}
    for fw in cats:
        for op, ms in out[fw].items():
            cats[fw][categorize(op)] += ms
    out["categories_ms_per_step"] = {fw: dict(c) for fw, c in cats.items()}
    print(f"CPU {out['cpu']['model']} ({' '.join(out['cpu']['simd_flags'])}); {args.mode} {args.precision}, "
          f"{args.size}px, batch {args.batch}, threads {args.threads or 'default'}; load "
          f"{out['load_before']} -> {out['load_after']}")
    print("| category | ours ms/step | torchvision ms/step | ours - torchvision |")
    print("|---|---|---|---|")
    names = [c for c, _ in CATEGORIES] + ["other"]
    for c in names:
        a, b = cats["ours"].get(c, 0.0), cats["torchvision"].get(c, 0.0)
        print(f"| {c} | {a:.0f} | {b:.0f} | {a - b:+.0f} |")
    ta, tb = sum(cats["ours"].values()), sum(cats["torchvision"].values())
    print(f"| **total (op self time)** | {ta:.0f} | {tb:.0f} | {ta - tb:+.0f} |")
    for fw in ("ours", "torchvision"):
        top = sorted(out[fw].items(), key=lambda kv: -kv[1])[:12]
        print(f"\n{fw}: top op types (ms/step): " + ", ".join(f"{k} {v:.0f}" for k, v in top))
    path = args.out or os.path.join(REPO, "benchmarks", "results", f"profile_{args.mode}_{args.precision}.json")
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
