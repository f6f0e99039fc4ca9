"""The main job, end to end on the embedded synthetic dataset (``make demo``).

synthetic data -> train DeepLabv3+ (and the per-pixel and FCN baselines the same way)
-> held-out mIoU -> SavedModel + int8 TFLite exports with parity JSON -> Predictor with a
dense CRF -> ``demo_out/``: ``model.keras``, ``saved_model/``, ``model_int8.tflite`` (+ its
``.json``), ``metrics.json``, ``training_curve.png``, ``examples.png``, ``report.md``.

    python -m keras_deeplab.demo --out demo_out            # the full demo (~15 min, 2 cores)
    python -m keras_deeplab.demo --out demo_out --quick    # CI smoke version (a minute or two)
    python -m keras_deeplab.demo --precision mixed_bfloat16   # or auto / float32 (the default)

The exit status is the verdict: 0 when every target of the mode is met, 1 otherwise, with
one line per missed target on stderr (``metrics.json`` and ``report.md`` are written either
way). Targets (`targets`):

* both modes (the pipeline works): every model's training loss fell from its first to its
  last epoch; every reported mIoU is a number in [0, 1]; the reloaded SavedModel gives the
  Keras model's labels (argmax agreement >= 0.999 in its parity check); the Predictor's mIoU
  on the test images equals `kd.training.evaluate`'s within 0.1 points (one prediction
  engine behind both);
* full mode only (accuracy): DeepLabv3+ test mIoU >= 0.85, per-pixel baseline <= 0.5,
  per-pixel < FCN < DeepLabv3+, int8 TFLite mIoU within 1 point of Keras. The quick run
  (96 images of 64 px, 2 epochs) proves the pipeline, not accuracy, so it does not check
  these.

Epochs: DeepLabv3+ and the FCN baseline train for the same number of epochs (``--epochs``),
so their comparison is not confounded by training length. The per-pixel baseline trains
``--pixel-epochs`` (3 in the full demo): its 1x1 convolutions (64 channels) run on every pixel
at full resolution, so its epochs are not cheap on a CPU (the report's train-time column
shows what they cost), and its score is bounded by the data, not by training: colour carries
almost no class information in the synthetic set, so it ends up near predicting background
everywhere. The report prints that background-everywhere score next to it (computed from the
test masks), so every run shows how close it is.

Training runs through ``keras_deeplab.training.fit`` (checkpoints + BackupAndRestore), so
an interrupted demo resumes from its last epoch when run again with the same ``--out``.
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_deeplab.training.precision import PRECISIONS  # noqa: E402

FULL = dict(image_size=128, num_train=2000, num_val=200, num_test=200, batch_size=16,
            epochs=12, pixel_epochs=3, lr=3e-3, crf_images=100, calib_images=64)
QUICK = dict(image_size=64, num_train=96, num_val=16, num_test=16, batch_size=8,
             epochs=2, pixel_epochs=2, lr=3e-3, crf_images=8, calib_images=8)

# Accuracy targets of the full demo (the quick run checks the pipeline only).
MIN_DEEPLAB_MIOU = 0.85
MAX_PIXEL_MIOU = 0.5
MAX_INT8_DELTA_POINTS = 1.0
# Pipeline targets of both modes.
MIN_SAVED_MODEL_AGREEMENT = 0.999
MAX_PREDICTOR_VS_EVALUATE_POINTS = 0.1


_START = time.time()


def _log(msg):
    print(f"[demo {time.time() - _START:6.0f}s] {msg}", flush=True)


def build_models(num_classes):
    """The three models the demo compares, all small enough for a CPU."""
    from keras_deeplab.models import FCN, DeepLabV3Plus, PixelClassifier

    small = {"backbone": "resnet18", "backbone_kwargs": {"base_filters": 16}}
    return {
        # ASPP rates scaled to the feature map: the paper's 6/12/18 are for the 33x33 map
        # of a 513 crop; a 128 image gives 8x8 at OS16, where rates >= 8 only see padding.
        "deeplabv3plus": DeepLabV3Plus(
            num_classes=num_classes, output_stride=16, aspp_rates=(2, 4, 6), aspp_filters=64,
            decoder_filters=64, low_level_filters=24, **small,
        ),
        "fcn": FCN(num_classes=num_classes, output_stride=32, **small),
        "pixel": PixelClassifier(num_classes=num_classes, hidden=(64, 64)),
    }


def compile_model(model, lr, total_steps, num_classes, **compile_kwargs):
    import keras

    from keras_deeplab.training.losses import CrossEntropy
    from keras_deeplab.training.metrics import MeanIoU
    from keras_deeplab.training.schedules import PolyDecay
    from keras_deeplab.utils import IGNORE_LABEL

    schedule = PolyDecay(lr, total_steps, warmup_steps=min(50, total_steps // 10))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=CrossEntropy(ignore_class=IGNORE_LABEL),
        metrics=[MeanIoU(num_classes=num_classes, ignore_class=IGNORE_LABEL)],
        **compile_kwargs,
    )


def miou_of_labels(labels, predictions, num_classes):
    """mIoU of integer label arrays (ignore 255), for the exported models' outputs."""
    from keras_deeplab.np_metrics import confusion_matrix, mean_iou

    return mean_iou(confusion_matrix(labels, predictions, num_classes))


def plot_curves(history, baselines, path):
    """The training curve of DeepLabv3+ with the baselines' final test mIoU: the figure every
    training run writes (`keras_deeplab.training.run_report.plot_training_curves`)."""
    from keras_deeplab.training.run_report import plot_training_curves

    plot_training_curves(history, path, baselines=baselines, title="DeepLabv3+ (demo)")


def plot_examples(images, masks, preds, crf_preds, palette, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_deeplab.data.palette import colorize

    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    titles = ("input", "ground truth", "prediction", "prediction + CRF")
    for i in range(n):
        panels = (images[i], colorize(masks[i], palette), colorize(preds[i], palette),
                  colorize(crf_preds[i], palette))
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel, interpolation="nearest")
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(titles[j])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--quick", action="store_true", help="tiny smoke version for CI")
    for key, value in FULL.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="compute precision of all three models (kd.training.set_precision;"
                             " auto: mixed_bfloat16 on a CPU with AVX512_BF16/AMX, else float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over instead of resuming an interrupted run (a finished run "
                             "is always started over)")
    return parser.parse_args(argv)


def check_targets(r, quick):
    """The demo's targets as {name: (met, what was measured)}; see the module docstring.

    Pipeline targets apply to both modes, accuracy targets to the full demo only.
    """
    names = ("deeplabv3plus", "fcn", "pixel")
    mious = {f"{n} test": r[n]["test_miou"] for n in names}
    mious.update({"Keras Predictor": r["exports"]["keras_miou"],
                  "int8 TFLite": r["exports"]["tflite_int8_miou"],
                  "CRF before": r["crf"]["miou_before"], "CRF after": r["crf"]["miou_after"]})
    bad = {k: v for k, v in mious.items() if not (np.isfinite(v) and 0.0 <= v <= 1.0)}
    # A resumed run's history holds only the epochs run in this process: with fewer than two
    # there is nothing to compare, and the detail says so.
    losses = {n: (r[n]["train_loss"][0], r[n]["train_loss"][-1]) for n in names
              if len(r[n]["train_loss"]) >= 2}
    unchecked = [n for n in names if n not in losses]
    not_falling = {n: v for n, v in losses.items() if not v[1] < v[0]}
    sm = r["exports"]["saved_model_argmax_agreement"]
    gap = 100 * abs(r["exports"]["keras_miou"] - r["deeplabv3plus"]["test_miou"])
    targets = {
        "training_loss_fell": (
            not not_falling,
            "first -> last epoch loss: " + ", ".join(
                f"{n} {a:.3f} -> {b:.3f}" for n, (a, b) in losses.items())
            + (f"; not checked (under 2 epochs run in this process): {unchecked}"
               if unchecked else "")),
        "miou_values_in_0_1": (not bad, f"out of [0, 1] or not finite: {bad}" if bad
                               else "all finite, in [0, 1]"),
        f"saved_model_agreement_ge_{MIN_SAVED_MODEL_AGREEMENT}": (
            sm >= MIN_SAVED_MODEL_AGREEMENT,
            f"SavedModel vs Keras argmax agreement {sm:.5f}"),
        f"predictor_equals_evaluate_within_{MAX_PREDICTOR_VS_EVALUATE_POINTS}_points": (
            gap <= MAX_PREDICTOR_VS_EVALUATE_POINTS,
            f"Predictor mIoU {r['exports']['keras_miou']:.4f} vs evaluate "
            f"{r['deeplabv3plus']['test_miou']:.4f} ({gap:.3f} points apart)"),
    }
    if quick:
        return targets
    dl, fcn, px = (r[n]["test_miou"] for n in names)
    delta = r["exports"]["tflite_int8_miou_delta_points"]
    targets.update({
        f"deeplabv3plus_miou_ge_{MIN_DEEPLAB_MIOU}": (
            dl >= MIN_DEEPLAB_MIOU, f"DeepLabv3+ test mIoU {dl:.4f}"),
        f"pixel_miou_le_{MAX_PIXEL_MIOU}": (
            px <= MAX_PIXEL_MIOU, f"per-pixel test mIoU {px:.4f}"),
        "pixel_lt_fcn_lt_deeplabv3plus": (
            px < fcn < dl, f"per-pixel {px:.4f}, FCN {fcn:.4f}, DeepLabv3+ {dl:.4f}"),
        f"int8_within_{MAX_INT8_DELTA_POINTS:g}_point": (
            abs(delta) <= MAX_INT8_DELTA_POINTS,
            f"int8 TFLite mIoU - Keras mIoU = {delta:+.2f} points"),
    })
    return targets


def main(argv=None):
    """Runs the demo; returns the exit status (0: every target met, 1: one or more missed)."""
    args = parse_args(argv)
    results = run(args)
    missed = {k: v for k, v in results["target_details"].items() if not v["met"]}
    mode = "quick" if args.quick else "full"
    if missed:
        for name, detail in missed.items():
            print(f"demo ({mode}): target NOT met: {name} ({detail['measured']})",
                  file=sys.stderr, flush=True)
        print(f"demo ({mode}): {len(missed)} of {len(results['targets'])} targets missed; "
              f"see {os.path.join(os.path.abspath(args.out), 'report.md')}",
              file=sys.stderr, flush=True)
        return 1
    _log(f"all {len(results['targets'])} {mode}-mode targets met")
    return 0


def run(args):
    """The demo itself (see the module docstring); returns the metrics.json content."""
    cfg = dict(QUICK if args.quick else FULL)
    for key in FULL:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)

    import keras
    import tensorflow as tf

    from keras_deeplab.data import ArraySource, make_pipeline, synthetic, synthetic_arrays
    from keras_deeplab.data.synthetic import CLASS_NAMES
    from keras_deeplab.export import saved_model as export_saved_model
    from keras_deeplab.export import tflite as export_tflite
    from keras_deeplab.inference import DenseCRF, Predictor
    from keras_deeplab.training import evaluate, fit, read_manifest, set_precision

    keras.utils.set_random_seed(args.seed)
    # Before the models are built; "auto" resolves here (metrics.json records both).
    previous_policy = set_precision(args.precision)
    cfg["precision"] = args.precision
    cfg["dtype_policy"] = keras.config.dtype_policy().name
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    num_classes = 6
    class_names = list(CLASS_NAMES[:num_classes])
    palette = "voc"
    size, bs = cfg["image_size"], cfg["batch_size"]
    _log(f"config: {json.dumps(cfg)} -> {out}")

    # 1. data ---------------------------------------------------------------------------
    data = {}
    for split in ("train", "val", "test"):
        data[split] = synthetic_arrays(split=split, num_images=cfg[f"num_{split}"],
                                       image_size=size, num_classes=num_classes, seed=args.seed)
    _log(f"synthetic data: {', '.join(f'{k} {v[0].shape[0]}' for k, v in data.items())} images of {size}x{size}")
    # The arrays made above feed the pipeline directly (kd.data.synthetic would make them again).
    train_ds = make_pipeline(
        ArraySource(*data["train"], num_classes=num_classes, name="synthetic/train"),
        batch_size=bs, training=True, crop_size=size, output="tuple", shuffle_seed=args.seed,
        # Flips only: random rescaling changes the texture periods that define the classes
        # and slows the short CPU schedule.
        augment={"min_scale": 1.0, "max_scale": 1.0},
    )

    def eval_ds(split):
        images, masks = data[split]
        return tf.data.Dataset.from_tensor_slices((images.astype("float32"), masks.astype("int32"))).batch(bs)

    val_ds, test_ds = eval_ds("val"), eval_ds("test")
    steps_per_epoch = int(np.ceil(cfg["num_train"] / bs))
    # Several optimizer steps per tf.function call, so the callbacks (backups, NaN checks,
    # Keras' logs) run once per call: the full demo took 489 s with it and 530 s without on an
    # idle machine, with the same mIoU to 4 digits (benchmarks/RESULTS.md). A divisor of the
    # epoch and of the backup interval keeps epochs and backups exact (kd.training.fit checks).
    from keras_deeplab.training.fit import DEFAULT_BACKUP_STEPS

    steps_per_execution = math.gcd(steps_per_epoch, DEFAULT_BACKUP_STEPS)

    # 2. train ----------------------------------------------------------------------------
    models = build_models(num_classes)
    results, history = {}, None
    for name, model in models.items():
        epochs = cfg["pixel_epochs"] if name == "pixel" else cfg["epochs"]
        compile_model(model, cfg["lr"], epochs * steps_per_epoch, num_classes,
                      steps_per_execution=steps_per_execution)
        t0 = time.time()
        _log(f"training {name} ({model.count_params():,} parameters) for {epochs} epochs")
        if name == "deeplabv3plus":
            run_dir = os.path.join(out, "run")
            previous = read_manifest(run_dir)
            overwrite = args.overwrite or (previous or {}).get("status") == "finished"
            if previous and not overwrite:
                _log(f"resuming the interrupted run in {run_dir}")
            hist = fit(
                model, train_ds, epochs=epochs, run_dir=run_dir, val_data=val_ds,
                num_classes=num_classes, class_names=class_names, dataset="synthetic",
                recipe="keras_deeplab.demo", config=cfg, tensorboard=False,
                overwrite=overwrite, verbose=2,
            )
            history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        else:
            hist = model.fit(train_ds, epochs=epochs, verbose=2, shuffle=False)  # tf.data shuffles
        train_seconds = time.time() - t0
        ev = evaluate(model, test_ds, num_classes=num_classes, class_names=class_names,
                      progress=False)
        results[name] = {
            "test_miou": float(ev["mean_iou"]),
            "test_pixel_accuracy": float(ev["pixel_accuracy"]),
            "per_class_iou": {c: float(v) for c, v in zip(class_names, ev["per_class_iou"])},
            "parameters": int(model.count_params()),
            "epochs": epochs,
            # After a resumed run, fit's history holds the epochs run in this process only.
            "train_loss": [float(v) for v in hist.history["loss"]],
            "train_seconds": round(train_seconds, 1),
        }
        _log(f"{name}: test mIoU {ev['mean_iou']:.4f} (trained in {train_seconds:.0f}s)")

    test_images, test_masks = data["test"]
    gt = test_masks[..., 0]
    # The score of predicting background (class 0) everywhere: what a model that cannot
    # see context is expected to reach on this data (colour carries no class information).
    results["background_everywhere_miou"] = miou_of_labels(gt, np.zeros_like(gt), num_classes)

    model = models["deeplabv3plus"]
    model_path = os.path.join(out, "model.keras")
    model.save(model_path)

    # 3. export ---------------------------------------------------------------------------
    sample = (test_images[:8], test_masks[:8])
    calib = synthetic(split="train", num_images=cfg["calib_images"], image_size=size,
                      num_classes=num_classes, seed=args.seed + 1, batch_size=1,
                      training=False, output="tuple")
    _log("exporting SavedModel")
    sm_info = export_saved_model(model, os.path.join(out, "saved_model"), sample_data=sample,
                                 verbose=False)
    _log("exporting int8 TFLite (calibrated on training images)")
    tflite_path = os.path.join(out, "model_int8.tflite")
    export_tflite(model, tflite_path, quantization="int8", representative_data=calib,
                  input_size=(size, size), num_calibration_images=cfg["calib_images"],
                  sample_data=sample, verbose=False)

    # 4. exported-model accuracy and CRF --------------------------------------------------
    keras_pred = Predictor(model_path, palette=palette)
    tflite_pred = Predictor(tflite_path, palette=palette)
    keras_labels = np.stack([r.labels for r in keras_pred.predict_batch(list(test_images))])
    tflite_labels = np.stack([r.labels for r in tflite_pred.predict_batch(list(test_images))])
    results["exports"] = {
        "keras_miou": miou_of_labels(gt, keras_labels, num_classes),
        "tflite_int8_miou": miou_of_labels(gt, tflite_labels, num_classes),
        "tflite_int8_argmax_agreement": float((keras_labels == tflite_labels).mean()),
        "tflite_int8_bytes": os.path.getsize(tflite_path),
        "saved_model_argmax_agreement": float(sm_info["parity"]["argmax_agreement"]),
    }
    results["exports"]["tflite_int8_miou_delta_points"] = 100 * (
        results["exports"]["tflite_int8_miou"] - results["exports"]["keras_miou"])
    _log(f"int8 TFLite mIoU {results['exports']['tflite_int8_miou']:.4f} vs Keras "
         f"{results['exports']['keras_miou']:.4f}")

    n_crf = min(cfg["crf_images"], len(test_images))
    crf = DenseCRF()
    crf_pred = Predictor(model_path, crf=crf, palette=palette)
    t0 = time.time()
    crf_labels = np.stack([r.labels for r in crf_pred.predict_batch(list(test_images[:n_crf]))])
    crf_seconds = time.time() - t0
    results["crf"] = {
        "images": n_crf,
        "params": {k: getattr(crf, k) for k in ("iterations", "gaussian_sxy", "gaussian_compat",
                                                 "bilateral_sxy", "bilateral_srgb", "bilateral_compat")},
        "miou_before": miou_of_labels(gt[:n_crf], keras_labels[:n_crf], num_classes),
        "miou_after": miou_of_labels(gt[:n_crf], crf_labels, num_classes),
        "seconds": round(crf_seconds, 2),
    }
    _log(f"CRF on {n_crf} test images: mIoU {results['crf']['miou_before']:.4f} -> "
         f"{results['crf']['miou_after']:.4f}")

    # 5. targets and report ---------------------------------------------------------------
    results["training_history"] = history
    results["config"] = cfg
    results["mode"] = "quick" if args.quick else "full"
    targets = check_targets(results, quick=args.quick)
    results["targets"] = {k: bool(met) for k, (met, _) in targets.items()}
    results["target_details"] = {k: {"met": bool(met), "measured": measured}
                                 for k, (met, measured) in targets.items()}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_curves(history, {k: results[k]["test_miou"] for k in ("fcn", "pixel")},
                os.path.join(out, "training_curve.png"))
    k = min(4, n_crf)
    plot_examples(test_images[:k], gt[:k], keras_labels[:k], crf_labels[:k], palette,
                  os.path.join(out, "examples.png"))
    write_report(results, cfg, os.path.join(out, "report.md"), quick=args.quick)
    _log(f"done: {out}")
    keras.config.set_dtype_policy(previous_policy)
    return results


def write_report(r, cfg, path, quick):
    from keras_deeplab.training.run_report import markdown_table

    e, c = r["exports"], r["crf"]
    lines = [
        "# keras_deeplab demo report",
        "",
        ("**Quick smoke run** (tiny data, few epochs): it proves the pipeline, not accuracy." if quick
         else "Full demo run on the synthetic dataset."),
        "",
        f"Data: synthetic, {cfg['image_size']}x{cfg['image_size']}, 6 classes (texture defines the class, "
        f"colour does not); {cfg['num_train']} train / {cfg['num_val']} val / {cfg['num_test']} held-out test images.",
        "",
        f"Precision: {cfg.get('precision', 'float32')} (dtype policy "
        f"{cfg.get('dtype_policy', 'float32')}).",
        "",
        markdown_table(["model", "parameters", "epochs", "train time", "test mIoU", "pixel acc."],
                       [[name, f"{r[name]['parameters']:,}", r[name]["epochs"],
                         f"{r[name]['train_seconds']:.0f} s", f"{r[name]['test_miou']:.4f}",
                         f"{r[name]['test_pixel_accuracy']:.4f}"]
                        for name in ("deeplabv3plus", "fcn", "pixel")]),
    ]
    lines += [
        "",
        "DeepLabv3+ and FCN train for the same number of epochs. "
        + ("The per-pixel baseline trains fewer: its 1x1 convolutions run on every pixel at "
           "full resolution, so its epochs are not cheap on a CPU (train time above), and "
           "without context it stays near predicting background everywhere, which scores "
           if r["pixel"]["epochs"] != r["deeplabv3plus"]["epochs"] else
           "So does the per-pixel baseline; for reference, predicting background everywhere scores ")
        + f"{r['background_everywhere_miou']:.4f} mIoU on these test images.",
        "",
        f"Exports: int8 TFLite mIoU {e['tflite_int8_miou']:.4f} vs Keras {e['keras_miou']:.4f} "
        f"({e['tflite_int8_miou_delta_points']:+.2f} points), argmax agreement "
        f"{100 * e['tflite_int8_argmax_agreement']:.2f}%, {e['tflite_int8_bytes'] / 1e6:.2f} MB. "
        "Parity details: `model_int8.tflite.json`, `saved_model.json`.",
        "",
        f"Dense CRF ({c['images']} test images, {c['seconds']} s): mIoU {c['miou_before']:.4f} -> "
        f"{c['miou_after']:.4f} ({100 * (c['miou_after'] - c['miou_before']):+.2f} points).",
        "",
        f"Targets ({r['mode']} mode; exit status 0 only if all are met):",
        "",
        *(f"* {k}: **{'met' if d['met'] else 'NOT met'}** ({d['measured']})"
          for k, d in r["target_details"].items()),
        "",
        "Files: `model.keras`, `saved_model/`, `model_int8.tflite` (+ `.json`), `metrics.json`, "
        "`training_curve.png`, `examples.png`, `run/` (checkpoints, manifest).",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
