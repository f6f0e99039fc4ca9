"""Training throughput (images/s) of DeepLabV3-ResNet50, OS16, 513x513 crops, batch 2:
ours vs torchvision's same-architecture DeepLabV3, in the same run.

Full training steps (forward, pixel cross-entropy with 255 ignored, backward, SGD with
momentum 0.9 and weight decay) on random data:

- ours: `model.train_on_batch` after ``model.compile(optimizer=kd.training.poly_sgd(...),
  loss=kd.losses.CrossEntropy())``, in fp32 and ``mixed_bfloat16``, each also with XLA
  (``compile(jit_compile=True)``), and fp32 with the dilated convs' gradient forced through
  space-to-batch (``ours_fp32_s2b``, ``KERAS_DEEPLAB_DILATED_GRADIENT=space_to_batch``: the
  path every CPU took before the native-gradient probe), and fp32 / bf16 with Keras' own batch
  norm instead of the library's fused one (``ours_fp32_keras_bn``, ``ours_bf16_keras_bn``:
  ``KERAS_DEEPLAB_FUSED_BN=0``, see ``keras_deeplab/layers/normalization.py``);
- torchvision: `_common.torchvision_deeplabv3` (ResNet-50, dilation in the last stage
  only, ASPP 6/12/18), ``torch.optim.SGD(momentum=0.9, weight_decay=4e-5)``,
  ``nn.CrossEntropyLoss(ignore_index=255)``, fp32 and bf16 (``torch.autocast("cpu",
  torch.bfloat16)`` around forward and loss), default NCHW layout and thread count.

Each case runs in a fresh process, the cases interleaved over ``--rounds`` rounds; medians
and the ratios ours / torchvision are printed, with the CPU's SIMD flags and the load
average before each case.

    python benchmarks/bench_training.py                          # 3 rounds, 5 steps per case
    python benchmarks/bench_training.py --rounds 1 --steps 2 --warmup 1   # reduced
    python benchmarks/bench_training.py --threads 1              # both on 1 thread (loaded machine)
    python benchmarks/bench_training.py --quick                  # tiny models, 64 px (smoke)
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    TARGET_RATIO,
    load,
    machine,
    median_of,
    print_machine,
    run_cases,
    set_threads,
    torchvision_deeplabv3,
    verdict,
    write_json,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["ours_fp32", "torchvision_fp32", "ours_bf16", "torchvision_bf16", "ours_fp32_xla", "ours_bf16_xla",
         "ours_fp32_s2b", "ours_fp32_keras_bn", "ours_bf16_keras_bn"]
PAIRS = [("ours_fp32", "torchvision_fp32"), ("ours_bf16", "torchvision_bf16"),
         ("ours_fp32_xla", "torchvision_fp32"), ("ours_bf16_xla", "torchvision_bf16"),
         ("ours_fp32", "ours_fp32_s2b"),
         ("ours_fp32", "ours_fp32_keras_bn"), ("ours_bf16", "ours_bf16_keras_bn")]


def data(crop, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    masks = rng.integers(0, 21, (batch, crop, crop, 1)).astype("int32")
    return images, masks


def steps_timed(step, steps, warmup):
    import numpy as np

    first = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    first = time.perf_counter() - first
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    return {"median_step_s": float(np.median(times)), "warmup_s": first, "final_loss": float(loss)}


def ours(case, crop, batch, steps, warmup, quick):
    if case.endswith("_s2b"):  # the space-to-batch gradient the layer used before issue 16
        os.environ["KERAS_DEEPLAB_DILATED_GRADIENT"] = "space_to_batch"
    if case.endswith("_keras_bn"):  # Keras' unfused batch norm instead of the library's fused one
        os.environ["KERAS_DEEPLAB_FUSED_BN"] = "0"
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    import keras_deeplab as kd
    from keras_deeplab.layers.atrous_conv import native_dilated_gradient_supported
    from keras_deeplab.layers.normalization import fused_bn_enabled

    precision = "mixed_bfloat16" if "bf16" in case else "float32"
    kd.training.set_precision(precision)
    if quick:
        model = kd.models.DeepLabV3(num_classes=21, backbone="resnet18", backbone_kwargs={"base_filters": 8},
                                    aspp_filters=16, output_stride=16)
    else:
        model = kd.models.DeepLabV3(num_classes=21, backbone="resnet50", output_stride=16, backbone_weights=None)
    model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=10_000), loss=kd.losses.CrossEntropy(),
                  jit_compile=case.endswith("_xla"))
    images, masks = data(crop, batch)
    out = steps_timed(lambda: np.asarray(model.train_on_batch(images, masks)).reshape(-1)[0], steps, warmup)
    out.update(precision=precision, keras=keras.__version__,
               native_dilated_gradient=native_dilated_gradient_supported(
                   keras.config.dtype_policy().compute_dtype), fused_bn=fused_bn_enabled())
    return out


def torchvision(case, crop, batch, steps, warmup, quick):
    import contextlib

    import torch

    model = torchvision_deeplabv3(21, 16).train()
    if quick:  # a narrow stand-in is not available in torchvision; shrink the input instead
        crop = min(crop, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    images, masks = data(crop, batch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous() / 255.0
    y = torch.from_numpy(masks[..., 0]).long()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in case else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x)["out"], y)
        loss.backward()
        opt.step()
        return loss.item()

    out = steps_timed(step, steps, warmup)
    out.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, 64 px, 1 round, 2 steps")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--crop", type=int, default=513)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="compute threads for both frameworks (0: their defaults); 1 on a loaded machine")
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "bench_training.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.crop, args.steps, args.warmup, args.rounds = 64, 2, 1, 1
    if args.child:
        fn = torchvision if args.child.startswith("torchvision") else ours
        set_threads(args.threads, "torch" if fn is torchvision else "tensorflow")
        result = fn(args.child, args.crop, args.batch, args.steps, args.warmup, args.quick)
        result["images_per_s"] = args.batch / result["median_step_s"]
        print(json.dumps(result))
        return 0
    print_machine()
    cases = args.cases.split(",")
    child_args = ["--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
                  "--warmup", str(args.warmup), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    runs = run_cases(os.path.abspath(__file__), cases, args.rounds, child_args)
    summary = {c: median_of(r, "images_per_s") for c, r in runs.items()}
    record = {"command": "python benchmarks/bench_training.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "crop": args.crop,
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "threads": args.threads or "default", "runs": runs, "median_images_per_s": summary, "load_after": load()}
    print(f"\n| case | images/s (median of {args.rounds}) | load (1-min) per round |")
    print("|---|---|---|")
    for c in cases:
        loads = ", ".join(str((r.get("load") or ["?"])[0]) for r in runs[c])
        print(f"| {c} | {summary[c]:.3f} | {loads} |")
    if args.quick:
        print("--quick compares a tiny model of ours with torchvision's ResNet-50: no ratios.")
    for a, b in ([] if args.quick else PAIRS):
        if a in summary and b in summary:
            record.setdefault("ratios", {})[f"{a}/{b}"] = summary[a] / summary[b]
            print(f"{a} / {b}: x{summary[a] / summary[b]:.2f}")
    write_json(args.output, record)
    print(f"(written to {args.output})")
    # exit status: issue 16's targets (ours / torchvision >= TARGET_RATIO, fp32 and bf16)
    return verdict(record.get("ratios", {}), runs,
                   [("ours_fp32/torchvision_fp32", TARGET_RATIO),
                    ("ours_bf16/torchvision_bf16", TARGET_RATIO)], quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
