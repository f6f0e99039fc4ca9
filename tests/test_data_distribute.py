"""kd.data.distribute over 2 logical CPU devices (in a subprocess, so TF starts fresh)."""

import subprocess
import sys

import pytest

import keras_deeplab as kd

_SCRIPT = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_deeplab as kd
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
ds = kd.data.synthetic("val", num_images=8, image_size=32, batch_size=4, output="tuple")
dist = kd.data.distribute(ds, strategy)
images, masks = kd.data.synthetic_arrays("val", num_images=8, image_size=32)
seen = []
for x, y in dist:
    parts = strategy.experimental_local_results(y)
    assert len(parts) == 2 and all(p.shape[0] == 2 for p in parts)
    seen.extend(np.concatenate([p.numpy() for p in parts]))
np.testing.assert_array_equal(np.stack(seen), masks)
print("OK")
"""


def test_mirrored_two_replicas_split_the_global_batch():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_single_replica_returns_dataset_and_checks_policy():
    ds = kd.data.synthetic("val", num_images=4, image_size=32, batch_size=2)
    same = kd.data.distribute(ds)
    assert len(list(same)) == 2
    with pytest.raises(ValueError, match="shard_policy"):
        kd.data.distribute(ds, shard_policy="rows")
