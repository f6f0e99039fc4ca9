"""Runs every benchmark in turn (``make bench``); each writes benchmarks/results/*.json and
prints the ratios it measured. Copy the printed tables into benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # full runs (~20-30 min on 2 CPU cores)
    python benchmarks/run_all.py --quick    # smoke check of every script
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_inference.py", "bench_training.py", "bench_memory.py", "bench_pipeline.py", "bench_tflite.py",
           "bench_crf.py", "bench_demo_step.py"]


def main():
    extra = sys.argv[1:]
    sys.path.insert(0, HERE)
    from _common import cpu

    info = cpu()
    print(f"== CPU: {info['model']}, {os.cpu_count()} cores, SIMD flags: "
          f"{' '.join(info['simd_flags']) or 'none found'}", flush=True)
    failed = []
    for script in SCRIPTS:
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            print(f"== {script}: missing, skipped")
            continue
        print(f"== {script} {' '.join(extra)}", flush=True)
        if subprocess.call([sys.executable, path, *extra]) != 0:
            failed.append(script)
    if failed:
        print("failed:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
