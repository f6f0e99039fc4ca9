"""Child process of tests/test_resume.py: a tiny `kd.training.fit` run that can be killed.

Usage: python _resume_worker.py RUN_DIR OUT.npz [--kill-at-step N] [--fault NAME[:K]]
       [--images N] [--lr LR] [--epochs E] [--backup-steps S] [--accept-changes]
       [--steps-per-execution K]

--kill-at-step N   after optimizer step N, write RUN_DIR/../paused and sleep (the test
                   sends SIGKILL).
--fault NAME:K     a hook that pauses *inside* the K-th write (1-based) whose target file name
                   contains NAME: the temporary file is cut to half its size (a write
                   interrupted midway), RUN_DIR/../paused is written and the process sleeps
                   before `os.replace` (the test sends SIGKILL). Detects in-place writers too:
                   they never reach os.replace, so the test times out.
Prints the final weights to OUT.npz and "DONE".
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("out")
parser.add_argument("--kill-at-step", type=int)
parser.add_argument("--fault")
parser.add_argument("--images", type=int, default=12)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--backup-steps", type=int, default=2)
parser.add_argument("--accept-changes", action="store_true")
parser.add_argument("--steps-per-execution", type=int, default=1)
args = parser.parse_args()
PAUSED = os.path.join(os.path.dirname(os.path.abspath(args.run_dir)), "paused")

if args.fault:
    name, _, count = args.fault.partition(":")
    count = int(count or 1)
    real_replace = os.replace
    seen = [0]

    def pausing_replace(src, dst, *a, **k):
        if name in os.path.basename(os.fspath(dst)):
            seen[0] += 1
            if seen[0] == count:
                size = os.path.getsize(src)
                with open(src, "r+b") as f:
                    f.truncate(size // 2)
                with open(PAUSED, "w") as f:
                    f.write(f"{os.path.abspath(src)} -> {os.path.abspath(dst)}\n")
                time.sleep(600)
        return real_replace(src, dst, *a, **k)

    os.replace = pausing_replace

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_deeplab as kd  # noqa: E402
from keras_deeplab.data.synthetic import synthetic  # noqa: E402

keras.utils.set_random_seed(0)
train = synthetic(num_classes=3, image_size=32, num_images=args.images, split="train",
                  batch_size=2, training=True, crop_size=32, output="tuple")
val = synthetic(num_classes=3, image_size=32, num_images=2, split="val", batch_size=2,
                training=False, output="tuple")
model = keras.Sequential([
    keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
    keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization(),
    keras.layers.ReLU(), keras.layers.Dropout(0.3), keras.layers.Conv2D(3, 1)])
steps = int(train.cardinality())
model.compile(optimizer=kd.training.poly_sgd(args.lr, total_steps=args.epochs * steps),
              loss=kd.losses.CrossEntropy(), steps_per_execution=args.steps_per_execution)


class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == args.kill_at_step:
            with open(PAUSED, "w") as f:
                f.write(str(step))
            time.sleep(600)


extra = [KillAt()] if args.kill_at_step else []
kd.training.fit(model, train, args.epochs, args.run_dir, val_data=val,
                config={"images": args.images}, tensorboard=False, callbacks=extra, verbose=0,
                backup_steps=args.backup_steps, accept_changes=args.accept_changes)
np.savez(args.out, *[keras.ops.convert_to_numpy(v) for v in model.weights],
         iterations=keras.ops.convert_to_numpy(model.optimizer.iterations))
print("DONE", flush=True)
sys.exit(0)
