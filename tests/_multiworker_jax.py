"""Child process of tests/test_multiworker_jax.py: a data-parallel step loop on JAX CPUs.

Usage: python _multiworker_jax.py NUM_PROCESSES PROCESS_ID PORT RUN_DIR OUT.npz

Every process gives `kd.training.fit` the same global batches of 8 images; Keras'
DataParallel shards them (8 // NUM_PROCESSES images per process). With NUM_PROCESSES=1 the
same global batches go through one process.
Writes the final weights and per-epoch losses to OUT.npz.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

num_processes, process_id, port = (int(v) for v in sys.argv[1:4])
run_dir, out = sys.argv[4], sys.argv[5]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_deeplab as kd  # noqa: E402

if num_processes > 1:
    kd.training.initialize_multi_process(f"127.0.0.1:{port}", num_processes, process_id,
                                         timeout=90)
kd.training.jax_data_parallel()

GLOBAL, STEPS = 8, 4
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (GLOBAL * STEPS, 16, 16, 3)).astype("float32")
y = ((x[..., :1] > 128).astype("int32") + (x[..., 1:2] > 200).astype("int32"))
import tensorflow as tf  # noqa: E402

# Every process gives fit the same global batches: Keras' DataParallel shards a tf.data set
# over the processes itself (each one computes its 8 // NUM_PROCESSES images).
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                          keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                          keras.layers.Conv2D(3, 1)])
model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
              loss=kd.losses.CrossEntropy())
w0 = np.asarray(model.weights[0]).copy()
history = kd.training.fit(model, train, 2, run_dir, tensorboard=False, verbose=0,
                          backup_steps=2)
np.savez(out, *[np.asarray(v) for v in model.weights],
         loss=np.asarray(history.history["loss"]))
print(f"DONE process {process_id}", int(np.asarray(model.optimizer.iterations)),
      float(np.abs(np.asarray(model.weights[0]) - w0).max()), flush=True)
