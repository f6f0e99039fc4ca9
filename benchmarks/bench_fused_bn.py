"""Experiment: what a fused batch norm (TF's ``FusedBatchNormV3``) would buy in the training
step of DeepLabV3-ResNet50, OS16, against Keras 3's own ``BatchNormalization``.

Keras 3 on TF does not fuse batch norm: training runs ``tf.nn.moments`` + ``tf.nn.batch_normalization``
(``Mean``, ``SquaredDifference``, ``Mul``, ``Sub``; ``Sum``/``Tile`` in the gradient). This script
defines ``FusedBatchNormalization``, a ``keras.layers.BatchNormalization`` subclass whose call on the
TF backend runs ``FusedBatchNormV3`` (training: batch statistics; inference: the moving ones),
checks its numerics against Keras' layer, and times a training step of the stock model and of the
same model with every BatchNormalization layer swapped for the fused one. Library code is not
changed. Since issue 16 the library's own batch norm (``keras_deeplab.layers.BatchNormalization``)
is fused, so ``build`` re-classes every batch norm of the model to Keras' layer (stock) or to this
script's prototype (fused); neither class has state of its own. The library's layer against
Keras' is ``bench_training.py``'s ``*_keras_bn`` cases.

    python benchmarks/bench_fused_bn.py --threads 1                  # check + 2 rounds x 4 cases
    python benchmarks/bench_fused_bn.py --check-only
    python benchmarks/bench_fused_bn.py --rounds 1 --steps 2 --crop 97   # smoke

Cases (each a fresh process, interleaved over ``--rounds``): ``stock_fp32``, ``fused_fp32``,
``stock_bf16``, ``fused_bf16`` (``mixed_bfloat16``); ``train_on_batch`` with SGD as in
``bench_training.py`` (its ``data`` and ``steps_timed``), median of ``--steps`` steps after
``--warmup``. Prints the ratio fused / stock of the step time per precision (< 1: fused is faster).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu, load, machine, median_of, run_cases, set_threads, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["stock_fp32", "fused_fp32", "stock_bf16", "fused_bf16"]


_FUSED = []


def fused_bn_class():
    """The fused BatchNormalization subclass (defined once, lazily: keras is imported in children)."""
    if _FUSED:
        return _FUSED[0]
    import keras
    import tensorflow as tf

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        """``keras.layers.BatchNormalization`` computed by TF's ``FusedBatchNormV3`` kernel.

        Same weights, config and semantics as Keras' layer: statistics in float32 (bf16/fp16
        inputs are cast to float32, as Keras does; the output is cast to the compute dtype),
        the biased batch variance for normalization and for the moving-average update
        ``moving = moving * momentum + batch * (1 - momentum)``. ``FusedBatchNormV3`` returns
        the Bessel-corrected (unbiased) batch variance, n / (n - 1) times the biased one for
        n = N*H*W > 1, so it is scaled back by (n - 1) / n. The raw op is called rather than
        ``tf.compat.v1.nn.fused_batch_norm``, which clamps epsilon to >= 1.001e-5 (a cuDNN
        requirement) and so would change the ASPP's 1e-5. Falls back to Keras' call for
        anything else (non-4D input, axis other than the last, masks, renorm, synchronized,
        other backends).
        """

        def call(self, inputs, training=None, mask=None):
            if (keras.backend.backend() != "tensorflow" or mask is not None or self.renorm
                    or self.synchronized or len(inputs.shape) != 4 or self.axis not in (-1, 3)):
                return super().call(inputs, training=training, mask=mask)
            x = tf.cast(inputs, tf.float32)
            channels = x.shape[-1]
            gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
            beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
            if training and self.trainable:
                empty = tf.constant([], tf.float32)
                y, mean, var_unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
                shape = tf.shape(x)
                n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
                variance = tf.where(n > 1.0, var_unbiased * ((n - 1.0) / tf.maximum(n, 1.0)), var_unbiased)
                self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
                self.moving_variance.assign(
                    self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            else:
                y = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                    variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=False)[0]
            return tf.cast(y, self.compute_dtype)

    _FUSED.append(FusedBatchNormalization)
    return FusedBatchNormalization


def build(fused, size=None):
    """The model with every batch norm re-classed to the prototype (fused) or Keras' layer."""
    sys.path.insert(0, REPO)
    import keras

    import keras_deeplab as kd

    model = kd.models.DeepLabV3(num_classes=21, backbone="resnet50", output_stride=16, backbone_weights=None)
    for layer in bn_layers(model):
        layer.__class__ = fused_bn_class() if fused else keras.layers.BatchNormalization
    return model


def bn_layers(model):
    import keras

    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
    return out


def check():
    """Numerics of the fused layer against Keras' (fp32 and mixed_bfloat16), then the whole
    model stock vs fused with the same weights."""
    import keras
    import numpy as np
    import tensorflow as tf

    Fused = fused_bn_class()
    rng = np.random.default_rng(0)
    res = {}

    def layer_case(policy, epsilon, momentum, shape):
        keras.config.set_dtype_policy(policy)
        ref = keras.layers.BatchNormalization(epsilon=epsilon, momentum=momentum)
        fus = Fused(epsilon=epsilon, momentum=momentum)
        ref.build(shape)
        fus.build(shape)
        c = shape[-1]
        weights = [rng.normal(1.0, 0.3, c), rng.normal(0.0, 0.5, c), rng.normal(0.0, 0.2, c),
                   rng.uniform(0.5, 2.0, c)]
        ref.set_weights([w.astype("float32") for w in weights])
        fus.set_weights([w.astype("float32") for w in weights])
        diffs = {"out": 0.0, "dx": 0.0, "dgamma": 0.0, "dbeta": 0.0, "moving_mean": 0.0,
                 "moving_variance": 0.0, "infer_out": 0.0}
        scale = {}

        def upd(key, a, b):
            a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
            diffs[key] = max(diffs[key], float(np.max(np.abs(a - b))))
            scale[key] = max(scale.get(key, 0.0), float(np.max(np.abs(a))))

        for _ in range(3):  # 3 training steps, different inputs, moving stats compared after each
            x = tf.constant(rng.normal(1.5, 3.0, shape).astype("float32"))
            dy = tf.constant(rng.normal(0.0, 1.0, shape).astype("float32"))
            outs, grads = [], []
            for layer in (ref, fus):
                xin = tf.cast(x, layer.compute_dtype)
                with tf.GradientTape() as tape:
                    tape.watch(xin)
                    y = layer(xin, training=True)
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
                g = tape.gradient(loss, [xin, layer.gamma, layer.beta])
                outs.append(y)
                grads.append(g)
            upd("out", outs[0], outs[1])
            for key, a, b in zip(("dx", "dgamma", "dbeta"), grads[0], grads[1]):
                upd(key, a, b)
            upd("moving_mean", ref.moving_mean, fus.moving_mean)
            upd("moving_variance", ref.moving_variance, fus.moving_variance)
        x = tf.cast(tf.constant(rng.normal(1.5, 3.0, shape).astype("float32")), ref.compute_dtype)
        upd("infer_out", ref(x, training=False), fus(x, training=False))
        keras.config.set_dtype_policy("float32")
        rel = {k: diffs[k] / scale[k] if scale[k] else 0.0 for k in diffs}
        return {"max_abs_diff": diffs, "max_abs_value": scale, "max_rel_diff": rel}

    for policy in ("float32", "mixed_bfloat16"):
        for eps in (1e-3, 1.001e-5, 1e-5):
            key = f"layer_{policy}_eps{eps:g}"
            res[key] = layer_case(policy, eps, 0.9, (4, 9, 11, 16))
            print(key, json.dumps(res[key]["max_rel_diff"]), file=sys.stderr, flush=True)
    res["layer_float32_n1_image_pooling"] = layer_case("float32", 1e-5, 0.9, (1, 1, 1, 8))
    print("n=1", json.dumps(res["layer_float32_n1_image_pooling"]["max_abs_diff"]), file=sys.stderr, flush=True)

    # The whole model, stock vs fused, same weights.
    keras.config.set_dtype_policy("float32")
    stock = build(False)
    fused = build(True)
    n_stock, n_fused = len(bn_layers(stock)), len(bn_layers(fused))
    n_fused_cls = sum(isinstance(layer, Fused) for layer in bn_layers(fused))
    for layer in bn_layers(stock):  # non-trivial BN weights (the initial ones make inference x / sqrt(1 + eps))
        c = layer.gamma.shape[0]
        layer.set_weights([rng.normal(1.0, 0.2, c).astype("float32"), rng.normal(0.0, 0.2, c).astype("float32"),
                           rng.normal(0.0, 0.2, c).astype("float32"), rng.uniform(0.5, 2.0, c).astype("float32")])
    fused.set_weights(stock.get_weights())
    for model in (stock, fused):  # the ASPP dropout would draw different masks in the two models
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    x = rng.uniform(0, 255, (2, 97, 97, 3)).astype("float32")
    y_true = rng.integers(0, 21, (2, 97, 97, 1)).astype("int32")
    infer = float(np.max(np.abs(np.asarray(stock(x, training=False)) - np.asarray(fused(x, training=False)))))
    # a training-mode forward + backward of the whole model (cross-entropy), gradients compared
    sys.path.insert(0, REPO)
    import keras_deeplab as kd

    loss_fn = kd.losses.CrossEntropy()
    grads, losses = [], []
    for model in (stock, fused):
        with tf.GradientTape() as tape:
            loss = loss_fn(y_true, model(x, training=True))
        grads.append(tape.gradient(loss, model.trainable_weights))
        losses.append(float(loss))
    # Conditioning yardstick: the stock model's gradients at the input perturbed by ~1e-7 relative
    # (float32 round-off): how far gradients move without any change of implementation.
    x_pert = (x * (1.0 + 1e-7 * rng.standard_normal(x.shape))).astype("float32")
    with tf.GradientTape() as tape:
        loss = loss_fn(y_true, stock(x_pert, training=True))
    g_pert = tape.gradient(loss, stock.trainable_weights)
    flat_p = [np.concatenate([np.ravel(g) for g in gs]) for gs in (grads[0], g_pert)]
    pert_rel = float(np.linalg.norm(flat_p[0] - flat_p[1]) / np.linalg.norm(flat_p[0]))
    names = [w.path for w in stock.trainable_weights]
    per_weight = sorted(((float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-30)), float(np.max(np.abs(a))), n)
                         for a, b, n in zip(*grads, names)), reverse=True)
    rel = per_weight[0][0]
    flat = [np.concatenate([np.ravel(g) for g in gs]) for gs in grads]
    global_rel = float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[0]))
    median_rel = float(np.median([r for r, _, _ in per_weight]))
    res["model"] = {
        "bn_layers_stock": n_stock, "bn_layers_fused": n_fused, "fused_class_layers": n_fused_cls,
        "weights_stock": len(stock.weights), "weights_fused": len(fused.weights),
        "params_stock": int(stock.count_params()), "params_fused": int(fused.count_params()),
        "infer_97px_max_abs_diff": infer,
        "infer_97px_max_abs_logit": float(np.max(np.abs(np.asarray(stock(x, training=False))))),
        "train_loss_stock": losses[0], "train_loss_fused": losses[1],
        "train_grad_max_rel_diff_per_weight": rel, "train_grad_median_rel_diff_per_weight": median_rel,
        "train_grad_worst_weights (rel diff, max |grad|, name)": per_weight[:4],
        "train_grad_global_rel_l2_diff": global_rel,
        "stock_vs_stock_input_perturbed_1e-7_grad_global_rel_l2_diff": pert_rel,
    }
    print("model", json.dumps(res["model"]), file=sys.stderr, flush=True)
    return res


def child(case, args):
    import numpy as np
    from bench_training import data, steps_timed

    sys.path.insert(0, REPO)
    import keras

    import keras_deeplab as kd

    precision = "mixed_bfloat16" if case.endswith("bf16") else "float32"
    kd.training.set_precision(precision)
    model = build(case.startswith("fused"))
    n_fused = sum(type(layer).__name__ == "FusedBatchNormalization" for layer in bn_layers(model))
    model.compile(optimizer=kd.training.poly_sgd(0.01, total_steps=10_000), loss=kd.losses.CrossEntropy())
    images, masks = data(args.crop, args.batch)
    out = steps_timed(lambda: np.asarray(model.train_on_batch(images, masks)).reshape(-1)[0],
                      args.steps, args.warmup)
    out.update(precision=precision, keras=keras.__version__, fused_bn_layers=n_fused,
               bn_layers=len(bn_layers(model)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--crop", type=int, default=321)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="TF compute threads (0: default)")
    p.add_argument("--check-only", action="store_true", help="numerics check only, no timing")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "bench_fused_bn.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        set_threads(args.threads, "tensorflow")
        result = check() if args.child == "check" else child(args.child, args)
        if "median_step_s" in result:
            result["images_per_s"] = args.batch / result["median_step_s"]
        print(json.dumps(result))
        return result
    info = cpu()
    start_load = load()
    print(f"CPU: {info['model']}, {os.cpu_count()} cores, SIMD flags: {' '.join(info['simd_flags'])}; "
          f"load {start_load}", flush=True)
    child_args = ["--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
                  "--warmup", str(args.warmup), "--threads", str(args.threads)]
    record = {"command": "python benchmarks/bench_fused_bn.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_start": start_load, "crop": args.crop, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads or "default"}
    if not args.skip_check:
        record["check"] = run_cases(os.path.abspath(__file__), ["check"], 1, child_args)["check"][0]
        print(json.dumps(record["check"], indent=1), flush=True)
    if not args.check_only:
        cases = args.cases.split(",")
        runs = run_cases(os.path.abspath(__file__), cases, args.rounds, child_args)
        summary = {c: median_of(r, "median_step_s") for c, r in runs.items()}
        record.update(runs=runs, median_step_s=summary, load_after=load())
        print(f"\n| case | step s (median of {args.rounds} rounds) | per round | load (1-min) per round |")
        print("|---|---|---|---|")
        for c in cases:
            per = ", ".join(f"{r.get('median_step_s', float('nan')):.2f}" for r in runs[c])
            loads = ", ".join(str((r.get("load") or ["?"])[0]) for r in runs[c])
            print(f"| {c} | {summary[c]:.3f} | {per} | {loads} |")
        for prec in ("fp32", "bf16"):
            a, b = f"fused_{prec}", f"stock_{prec}"
            if a in summary and b in summary:
                # per-round ratios too: the rounds of one case ran at different loads
                per_round = [ra["median_step_s"] / rb["median_step_s"] for ra, rb in zip(runs[a], runs[b])
                             if "median_step_s" in ra and "median_step_s" in rb]
                record.setdefault("ratios", {})[f"{a}/{b}"] = {"of_medians": summary[a] / summary[b],
                                                               "per_round": per_round}
                print(f"step time {a} / {b}: x{summary[a] / summary[b]:.3f} "
                      f"(per round: {', '.join(f'x{v:.3f}' for v in per_round)})")
    write_json(args.output, record)
    print(f"(written to {args.output})")
    return record


if __name__ == "__main__":
    main()
