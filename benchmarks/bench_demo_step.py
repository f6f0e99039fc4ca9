"""Training step of the demo's DeepLabv3+ (`make demo`): which Keras settings make it fastest
on this CPU, measured in the same run.

The model, optimizer and loss are the demo's own (`keras_deeplab.demo.build_models`,
`compile_model`: ResNet-18 with 16 base filters, ASPP 2/4/6 with 64 filters, Adam with poly
decay, pixel cross-entropy with 255 ignored, the MeanIoU metric), trained with ``model.fit`` on
random 128x128 images in batches of 16 from an in-memory ``tf.data`` pipeline (the demo's
augmentation is not included: this times the model step). Cases:

- ``default``: what the demo does (``compile`` defaults: no XLA on a CPU-only machine, one step
  per ``tf.function`` call);
- ``xla``: ``compile(jit_compile=True)``;
- ``spe8``: ``compile(steps_per_execution=8)`` (8 steps per ``tf.function`` call);
- ``keras_bn``: the default with Keras' own batch norm computation (``KERAS_DEEPLAB_FUSED_BN=0``;
  the library's `keras_deeplab.layers.BatchNormalization` otherwise runs TF's fused kernel).

Each case runs in a fresh process, the cases interleaved over ``--rounds``; the seconds per
step are timed by a callback between its first call after the warm-up steps and its last one
(``steps_per_execution=8`` calls it every 8 steps, so use multiples of 8), and the
ratios to ``default`` are printed with the CPU's SIMD flags and the load before each case.

    python benchmarks/bench_demo_step.py                        # 3 rounds, 48 steps per case
    python benchmarks/bench_demo_step.py --rounds 1 --steps 16  # reduced
    python benchmarks/bench_demo_step.py --quick                # smoke
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load, machine, median_of, print_machine, run_cases, set_threads, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["default", "xla", "spe8", "keras_bn"]


def child(case, steps, warmup, size, batch):
    if case == "keras_bn":
        os.environ["KERAS_DEEPLAB_FUSED_BN"] = "0"
    sys.path.insert(0, REPO)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_deeplab import demo

    keras.utils.set_random_seed(0)
    model = demo.build_models(num_classes=8)["deeplabv3plus"]
    demo.compile_model(model, 3e-3, total_steps=10_000, num_classes=8,
                       jit_compile=case == "xla", steps_per_execution=8 if case == "spe8" else 1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch * 4, size, size, 3)).astype("float32")
    masks = rng.integers(0, 8, (batch * 4, size, size, 1)).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch).repeat().prefetch(2)

    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            marks.append((batch_index, time.perf_counter()))

    total = warmup + steps
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=total, epochs=1, verbose=0, callbacks=[Clock()])
    # From the first mark at or after the warm-up to the last one (with steps_per_execution=k
    # marks come every k steps, at the index of each call's last step).
    after = [(i, t) for i, t in marks if i + 1 >= warmup]
    if len(after) < 2:
        raise SystemExit(f"{case}: too few steps to time ({marks}); raise --steps")
    (first_i, first_t), (last_i, last_t) = after[0], after[-1]
    timed_steps = last_i - first_i
    return {"median_step_s": (last_t - first_t) / timed_steps, "timed_steps": timed_steps,
            "warmup_s": first_t - start, "keras": keras.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="TF compute threads (0: default)")
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "bench_demo_step.json"))
    p.add_argument("--quick", action="store_true", help="1 round, 8 steps after 8 warm-up (smoke)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 8, 8
    if args.child:
        set_threads(args.threads, "tensorflow")
        result = child(args.child, args.steps, args.warmup, args.size, args.batch)
        result["images_per_s"] = args.batch / result["median_step_s"]
        print(json.dumps(result))
        return 0
    print_machine()
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown --cases {', '.join(unknown)}; choose from {', '.join(CASES)}")
    child_args = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--size", str(args.size),
                  "--batch", str(args.batch), "--threads", str(args.threads)]
    runs = run_cases(os.path.abspath(__file__), cases, args.rounds, child_args)
    summary = {c: median_of(r, "median_step_s") for c, r in runs.items()}
    print(f"\n| case | s/step (median of {args.rounds}) | / default |")
    print("|---|---|---|")
    for c in cases:
        ratio = summary[c] / summary["default"] if "default" in summary else float("nan")
        print(f"| {c} | {summary[c]:.4f} | x{ratio:.2f} |")
    write_json(args.output, {
        "command": "python benchmarks/bench_demo_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs, "median_step_s": summary, "load_after": load()})
    failed = [c for c, r in runs.items() if any("error" in x for x in r)]
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
