"""The gradient of `AtrousConv2D`: native dilated backprop vs the space-to-batch formulation.

`keras_deeplab/layers/atrous_conv.py` takes TensorFlow's own dilated
``Conv2DBackpropInput/Filter`` where the running kernels support them (oneDNN, TF's
default x86 CPU kernels; cuDNN) and the space-to-batch gradient where they don't (TF's
Eigen CPU kernels, ``TF_ENABLE_ONEDNN_OPTS=0``), decided by a probe once per process.
Both are checked here on one training step of a small DeepLabV3 (dilated backbone at OS8,
ASPP), fp32 and mixed_bfloat16. ``TF_ENABLE_ONEDNN_OPTS`` must be set before TensorFlow
is imported, so every configuration runs in a fresh subprocess (this file run as a
script).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MODE_ENV = "KERAS_DEEPLAB_DILATED_GRADIENT"
PRECISIONS = ("float32", "mixed_bfloat16")


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _worker(out_dir):
    """One process: the gradients of one training step per precision, saved to out_dir."""
    import tensorflow as tf

    sys.path.insert(0, REPO)
    import keras

    from keras_deeplab.layers import atrous_conv
    from keras_deeplab.models.deeplab_v3 import DeepLabV3
    from keras_deeplab.training.precision import set_precision

    # An independent answer to "do these kernels run a dilated backprop?": the raw op.
    try:
        tf.raw_ops.Conv2DBackpropFilter(
            input=tf.ones((1, 6, 6, 1)), filter_sizes=[3, 3, 1, 1], out_backprop=tf.ones((1, 6, 6, 1)),
            strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 2, 2, 1])
        raw_op_runs = True
    except tf.errors.OpError:
        raw_op_runs = False
    info = {"raw_op_runs": raw_op_runs, "results": {}}
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 65, 65, 3)).astype("float32")
    masks = rng.integers(0, 5, (2, 65, 65, 1)).astype("int32")
    masks[:, :5] = 255  # some ignored pixels
    for precision in PRECISIONS:
        set_precision(precision)
        model = DeepLabV3(num_classes=5, backbone="resnet18", backbone_kwargs={"base_filters": 8},
                          aspp_filters=16, aspp_dropout=0.0, output_stride=8)
        model.build((None, 65, 65, 3))
        wrng = np.random.default_rng(1)  # the same weights in every process
        for v in model.weights:
            if "moving_variance" in v.path or v.path.endswith("gamma"):
                v.assign(wrng.uniform(0.5, 1.5, v.shape).astype("float32"))
            else:
                v.assign(wrng.normal(0, 0.1, v.shape).astype("float32"))

        step = _training_step(model)
        record = {"precision": precision,
                  "native_supported": atrous_conv.native_dilated_gradient_supported(
                      keras.config.dtype_policy().compute_dtype)}
        try:
            concrete = step.get_concrete_function(tf.TensorSpec(images.shape), tf.TensorSpec(masks.shape, tf.int32))
            op_types = [op.type for op in concrete.graph.get_operations()]
            record["space_to_batch_ops"] = op_types.count("SpaceToBatchND")
            record["dilated_backprop_ops"] = sum(
                1 for op in concrete.graph.get_operations()
                if op.type in ("Conv2DBackpropInput", "Conv2DBackpropFilter")
                and max(op.get_attr("dilations")) > 1)
            loss, grads = concrete(tf.constant(images), tf.constant(masks))
            np.savez(os.path.join(out_dir, f"{precision}.npz"),
                     **{f"g{i}": np.asarray(g, "float32") for i, g in enumerate(grads)})
            record["loss"] = float(loss)
            record["ok"] = True
        except tf.errors.OpError as e:
            record["ok"] = False
            record["error"] = f"{type(e).__name__}: {e.message[:3000]}"
        info["results"][precision] = record
    set_precision("float32")
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f)


def _training_step(model):
    """A traced training step's loss and gradients: pixel cross-entropy, 255 ignored."""
    import tensorflow as tf

    variables = model.trainable_variables

    def loss_fn(y, logits):
        y = tf.squeeze(y, -1)
        valid = tf.not_equal(y, 255)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.boolean_mask(y, valid), tf.boolean_mask(tf.cast(logits, tf.float32), valid))
        return tf.reduce_mean(ce)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, variables)

    return step


def run_config(tmp_path_factory, onednn, mode):
    out_dir = str(tmp_path_factory.mktemp(f"onednn{onednn}_{mode}"))
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": str(onednn), MODE_ENV: mode,
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", out_dir],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"worker (oneDNN={onednn}, {mode}) failed:\n{proc.stderr[-4000:]}"
    with open(os.path.join(out_dir, "info.json")) as f:
        info = json.load(f)
    grads = {}
    for precision, record in info["results"].items():
        if record["ok"]:
            with np.load(os.path.join(out_dir, f"{precision}.npz")) as z:
                grads[precision] = [z[f"g{i}"] for i in range(len(z.files))]
    return info, grads


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "AMD64"):
        pytest.fail("tests/test_atrous_grad.py expects x86-64 Linux, where TF's default CPU "
                    "kernels are oneDNN's and TF_ENABLE_ONEDNN_OPTS=0 selects Eigen's.")
    return {(onednn, mode): run_config(tmp_path_factory, onednn, mode)
            for onednn in (1, 0) for mode in ("auto", "native", "space_to_batch")}


# Relative error ||a - b|| / ||b||, worst over the variables. Same kernels, the two
# formulations: fp32 sums the same products in another order (observed 2e-6); bf16 rounds
# every conv's inputs and outputs to 8 significant bits (2^-8 = 0.4%) through ~30 layers
# (observed 2e-2 on a Zen 4 with AVX512_BF16). Eigen vs oneDNN runs every op (plain convs,
# batch norm) on other kernels: fp32 observed 1.7e-4; in bf16 the two libraries' forward
# passes already differ by ~10%, so bf16 is compared within one library only.
TOLERANCE = {"float32": 1e-4, "mixed_bfloat16": 5e-2}
CROSS_LIBRARY_TOLERANCE = 1e-3


def assert_grads_close(a, b, precision, what, tolerance=None):
    assert len(a) == len(b) and len(a) > 20
    worst = max(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12) for x, y in zip(a, b))
    assert worst < (tolerance or TOLERANCE[precision]), (
        f"{what} [{precision}]: worst relative gradient difference {worst:.2e} "
        f"(CPU flags: {sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'})})")
    assert all(np.isfinite(x).all() for x in a)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_native_and_space_to_batch_gradients_agree_with_onednn(configs, precision):
    native_info, native = configs[(1, "native")]
    s2b_info, s2b = configs[(1, "space_to_batch")]
    assert native_info["results"][precision]["ok"], native_info["results"][precision]
    # The forced paths really are different graphs: the native one has dilated backprop
    # ops and no space-to-batch; the other the reverse.
    assert native_info["results"][precision]["space_to_batch_ops"] == 0
    assert native_info["results"][precision]["dilated_backprop_ops"] > 0
    assert s2b_info["results"][precision]["space_to_batch_ops"] > 0
    assert s2b_info["results"][precision]["dilated_backprop_ops"] == 0
    assert_grads_close(native[precision], s2b[precision], precision, "oneDNN: native vs space-to-batch")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_probe_picks_native_exactly_where_the_raw_op_runs(configs, precision):
    for onednn in (1, 0):
        info, _ = configs[(onednn, "auto")]
        record = info["results"][precision]
        assert record["ok"], record
        assert record["native_supported"] == info["raw_op_runs"], (onednn, record)
        assert (record["space_to_batch_ops"] == 0) == info["raw_op_runs"], (onednn, record)
    # On x86-64, oneDNN kernels (TF's default) run the dilated backprop; Eigen's don't.
    assert configs[(1, "auto")][0]["raw_op_runs"] is True
    assert configs[(0, "auto")][0]["raw_op_runs"] is False


@pytest.mark.parametrize("precision", PRECISIONS)
def test_without_onednn_native_fails_and_auto_falls_back(configs, precision):
    forced = configs[(0, "native")][0]["results"][precision]
    assert not forced["ok"] and "do not yet support dilation rates" in forced["error"], forced
    _, auto_off = configs[(0, "auto")]
    _, s2b_off = configs[(0, "space_to_batch")]
    assert_grads_close(auto_off[precision], s2b_off[precision], precision, "Eigen: auto vs space-to-batch")
    if precision == "float32":
        # The fallback's gradients equal oneDNN's native ones (other kernels, same maths).
        _, native_on = configs[(1, "native")]
        assert_grads_close(auto_off[precision], native_on[precision], precision,
                           "Eigen fallback vs oneDNN native", CROSS_LIBRARY_TOLERANCE)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2])
