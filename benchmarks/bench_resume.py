"""Work lost on ``kill -9`` at the recipe defaults, and what a step-level backup costs.

Builds the Cityscapes recipe's default model (DeepLabV3+ ResNet-101, OS16, 19 classes, no
pretrained download), compiles it as `kd.training.experiment.train` does, times
``--steps`` training steps at ``--crop``/``--batch`` on random data (0: skip) and one
`RunBackup.save` (weights + optimizer state, SHA-256, metadata; atomic). Prints a Markdown
row: a kill loses at most ``backup_steps`` steps, i.e. ``backup_steps * step_s`` seconds, plus
the backup's own time every ``backup_steps`` steps.

    python benchmarks/bench_resume.py --steps 0            # backup cost only (any machine)
    python benchmarks/bench_resume.py --steps 5 --warmup 2 # on a GPU: the step time too
"""

import argparse
import dataclasses
import os
import tempfile
import time

import keras
import numpy as np

from keras_deeplab.training.checkpoints import RunBackup
from keras_deeplab.training.config import DATASET_DEFAULTS, DataConfig, RunConfig
from keras_deeplab.training.experiment import build_model
from keras_deeplab.training.losses import CrossEntropy
from keras_deeplab.training.optimizers import poly_sgd


def main():
    defaults = DATASET_DEFAULTS["cityscapes"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=defaults["crop_size"])
    parser.add_argument("--batch", type=int, default=defaults["batch_size"])
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    config = RunConfig(data=DataConfig("cityscapes", "/unused"))
    model_config = dataclasses.replace(config.model, backbone_weights="none")
    model = build_model(model_config, 19)
    model.compile(optimizer=poly_sgd(0.01, 90_000), loss=CrossEntropy())
    x = np.random.uniform(0, 255, (args.batch, args.crop, args.crop, 3)).astype("float32")
    y = np.random.randint(0, 19, (args.batch, args.crop, args.crop, 1)).astype("int32")
    step_s = None
    if args.steps:
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        step_s = float(np.median(times))
    else:
        model.optimizer.build(model.trainable_variables)
        model(x[:1, :65, :65])
    with tempfile.TemporaryDirectory() as folder:
        backup = RunBackup(os.path.join(folder, "backup"), save_freq=config.backup_steps)
        backup.set_model(model)
        start = time.perf_counter()
        backup.save(0, 0)
        save_s = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(folder, "backup", f))
                   for f in os.listdir(os.path.join(folder, "backup")))
    steps = config.backup_steps
    lost = "n/a (--steps 0)" if step_s is None else f"{steps * step_s:.0f}"
    print("| model | params | crop x batch | step (s) | backup (s) | backup (MB) | "
          "backup_steps | lost at most (steps) | lost at most (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {model_config.model} {model_config.backbone} OS{model_config.output_stride} | "
          f"{model.count_params() / 1e6:.1f} M | {args.crop} x {args.batch} | "
          f"{'n/a' if step_s is None else f'{step_s:.3f}'} | {save_s:.2f} | {size / 1e6:.0f} | "
          f"{steps} | {steps} | {lost} |")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")


if __name__ == "__main__":
    main()
