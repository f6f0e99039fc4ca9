"""bf16 accuracy parity on the demo: the full demo (`keras_deeplab.demo`) in float32 and in
mixed_bfloat16, same seed (same data, same initial weights), each in a fresh process run one
after the other, then the DeepLabv3+ test mIoU of both, their difference and every demo
target of the bf16 run.

Parity (issue 16): |mIoU_bf16 - mIoU_fp32| <= 0.5 points and every full-demo target met in
bf16. mIoU does not depend on the machine's load; the train times do (recorded with the 1/5/15
minute load averages at the start and end of each run: upper bounds on a shared machine).

    python benchmarks/bf16_parity.py --seed 0 --out-root /tmp/bf16parity
    python benchmarks/bf16_parity.py --seed 0 --out-root /tmp/bf16parity --reuse  # compare only

Writes ``benchmarks/results/bf16_parity_seed<N>.json`` and prints a summary; exit status 0
when parity holds.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu, load, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("float32", "mixed_bfloat16")
MAX_GAP_POINTS = 0.5


def run_demo(precision, seed, out):
    """One full demo in a fresh, nice'd process; returns {wall_s, load_start, load_end, rc}."""
    record = {"load_start": load()}
    t0 = time.time()
    cmd = ["nice", sys.executable, "-m", "keras_deeplab.demo", "--out", out,
           "--precision", precision, "--seed", str(seed), "--overwrite"]
    with open(out + ".log", "w") as log:
        rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    record.update(wall_s=round(time.time() - t0, 1), load_end=load(), rc=rc,
                  command=" ".join(cmd[1:]))
    return record


def summarize(precision, out, run=None):
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    cfg = m["config"]
    if cfg.get("dtype_policy", "float32") != precision:
        raise SystemExit(f"{out}/metrics.json was run with dtype policy "
                         f"{cfg.get('dtype_policy', 'float32')!r}, not {precision!r}; run "
                         "again without --reuse.")
    return {
        "out": out,
        "dtype_policy": cfg.get("dtype_policy", "float32"),
        "deeplabv3plus_test_miou": m["deeplabv3plus"]["test_miou"],
        "fcn_test_miou": m["fcn"]["test_miou"],
        "pixel_test_miou": m["pixel"]["test_miou"],
        "int8_tflite_delta_points": m["exports"]["tflite_int8_miou_delta_points"],
        "train_seconds": {n: m[n]["train_seconds"] for n in ("deeplabv3plus", "fcn", "pixel")},
        "targets": m["target_details"],
        "all_targets_met": all(d["met"] for d in m["target_details"].values()),
        "run": run,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-root", default="bf16_parity_out")
    parser.add_argument("--reuse", action="store_true",
                        help="compare existing <out-root>/<precision>_s<seed>/metrics.json")
    args = parser.parse_args(argv)
    results = {}
    for precision in PRECISIONS:
        out = os.path.abspath(os.path.join(args.out_root, f"{precision}_s{args.seed}"))
        run = None if args.reuse else run_demo(precision, args.seed, out)
        results[precision] = summarize(precision, out, run)
    fp32, bf16 = (results[p]["deeplabv3plus_test_miou"] for p in PRECISIONS)
    gap = 100 * (bf16 - fp32)
    parity = abs(gap) <= MAX_GAP_POINTS and results["mixed_bfloat16"]["all_targets_met"]
    info = cpu()
    record = {
        "seed": args.seed,
        "cpu": info["model"], "cpu_simd_flags": info["simd_flags"], "cores": os.cpu_count(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                 capture_output=True, text=True).stdout.strip(),
        "results": results,
        "deeplabv3plus_gap_points": gap,
        "max_gap_points": MAX_GAP_POINTS,
        "parity": parity,
    }
    write_json(os.path.join(REPO, "benchmarks", "results", f"bf16_parity_seed{args.seed}.json"),
               record)
    print(f"seed {args.seed}: DeepLabv3+ test mIoU fp32 {fp32:.4f}, bf16 {bf16:.4f}, "
          f"bf16 - fp32 = {gap:+.2f} points (limit {MAX_GAP_POINTS}); bf16 targets "
          f"{'all met' if results['mixed_bfloat16']['all_targets_met'] else 'NOT all met'}"
          f" -> parity {'holds' if parity else 'does NOT hold'}")
    return 0 if parity else 1


if __name__ == "__main__":
    sys.exit(main())
