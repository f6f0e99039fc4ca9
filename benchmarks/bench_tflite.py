"""TFLite latency: float32 vs float16 vs int8 next to the Keras model, in the same run.

Exports one model (default DeepLabV3-ResNet50 OS16, 21 classes, random weights built from
config: latency does not depend on the weights) with `kd.export.tflite` at a fixed input
size (default 513x513), then times batch-1 inference of each .tflite file with the LiteRT
interpreter (XNNPACK, --threads threads) and of the Keras model (tf.function, same input).
int8 is calibrated on natural-statistics images (crops of matplotlib's sample photo plus
kd.data synthetic images). Reports median ms/image, file size, the op list check and the
parity figures from each export's sidecar JSON (argmax agreement with the Keras model).

    python benchmarks/bench_tflite.py                       # DeepLabV3-ResNet50 OS16 at 513x513
    python benchmarks/bench_tflite.py --preset deeplabv3plus_mobilenetv2_cityscapes
    python benchmarks/bench_tflite.py --quick               # tiny model, 129 px (smoke check)
    python benchmarks/bench_tflite.py --pretrained lraspp_mobilenet_v3_large --size 520
                                      # a kd.pretrained architecture (the edge models)

With --pretrained the model is the registered architecture (torchvision's layout) built
with random weights and without its auxiliary head (the TFLite export holds the main logits
only, so the Keras model is timed without it too). The CPU model, its SIMD flags and the
1/5/15-minute load averages before and after the run are printed and recorded: on a shared
machine a figure measured under load is provisional.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, quiet_tf, timed, write_json  # noqa: E402

quiet_tf()


def natural_images(num, size, seed=0):
    """Random crops/flips of a real photograph, resized to `size` (float32, [0, 255])."""
    import matplotlib
    import numpy as np
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    photo = Image.open(path).convert("RGB")
    rng = np.random.default_rng(seed)
    out = []
    w, h = photo.size
    for _ in range(num):
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop, np.float32)
        out.append(arr[:, ::-1] if rng.random() < 0.5 else arr)
    return np.stack(out)


def _load():
    """The 1/5/15-minute load averages (what ``uptime`` prints), or None."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def build_model(args):
    import keras_deeplab as kd

    if args.pretrained:
        from keras_deeplab.pretrained.registry import get_architecture

        return get_architecture(args.pretrained).build(num_classes=args.num_classes, aux=False)
    if args.preset:
        return kd.models.from_preset(args.preset, num_classes=args.num_classes)
    if args.quick:
        return kd.models.DeepLabV3Plus(
            num_classes=args.num_classes, backbone="resnet18", backbone_kwargs={"base_filters": 8},
            output_stride=16, aspp_filters=16, decoder_filters=16,
        )
    return kd.models.DeepLabV3(
        num_classes=args.num_classes, backbone=args.backbone, output_stride=args.output_stride
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--preset", default=None, help="kd.models preset name (overrides --backbone)")
    parser.add_argument("--pretrained", default=None,
                        help="kd.pretrained architecture, e.g. lraspp_mobilenet_v3_large "
                             "(random weights, no aux head; overrides --preset/--backbone)")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument("--quantizations", default="float32,float16,int8")
    parser.add_argument("--quick", action="store_true", help="tiny model, 129 px, 2 iterations")
    parser.add_argument("--workdir", default=None, help="where the .tflite files go (default: temp dir)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "tflite.json"))
    args = parser.parse_args()
    if args.quick:
        args.size, args.iters, args.warmup, args.calibration_images = 129, 2, 1, 4

    import numpy as np
    import tensorflow as tf

    import keras_deeplab as kd
    from keras_deeplab.export import TFLiteRunner

    model = build_model(args)
    size = (args.size, args.size)
    calib = natural_images(args.calibration_images, args.size, seed=0)
    sample = natural_images(2, args.size, seed=1)
    x = sample[:1]

    results = {"machine": machine(), "size": args.size, "threads": args.threads,
               "model": args.pretrained or args.preset or (
                   f"DeepLabV3-{args.backbone} OS{args.output_stride}"
                   if not args.quick else "tiny DeepLabV3+ (resnet18/8)"),
               "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
               "load_before": _load(), "runs": {}}
    print(f"CPU: {results['machine']['cpu']} ({results['machine']['cores']} cores), SIMD: "
          f"{' '.join(results['machine']['cpu_simd_flags']) or 'none of the listed'}; "
          f"load average (1/5/15 min) {results['load_before']}")
    fn = tf.function(lambda t: model(t, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *size, 3), tf.float32))
    xt = tf.constant(x)
    sec = timed(lambda: np.asarray(concrete(xt)), warmup=args.warmup, iters=args.iters)
    results["runs"]["keras_tf"] = {"ms_per_image": 1e3 * sec}
    print(f"{results['model']} at {args.size}x{args.size}, batch 1")
    print(f"keras (TF {tf.__version__})          : {1e3 * sec:8.1f} ms/img")

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_tflite_")
    for q in args.quantizations.split(","):
        quant = None if q == "float32" else q
        path = os.path.join(workdir, f"model_{q}.tflite")
        info = kd.export.tflite(
            model, path, quantization=quant, input_size=size,
            representative_data=calib, sample_data=sample, num_parity_images=2,
            uint8_input=(quant == "int8"), verbose=False,
        )
        runner = TFLiteRunner(path, num_threads=args.threads)
        sec = timed(lambda r=runner: r(x), warmup=args.warmup, iters=args.iters)
        run = {
            "ms_per_image": 1e3 * sec,
            "speedup_vs_keras": results["runs"]["keras_tf"]["ms_per_image"] / (1e3 * sec),
            "size_mb": info["size_bytes"] / 1e6,
            "ops": sorted(info["ops"]["op_counts"]),
            "dilated_convolutions": len(info["ops"]["dilated_convolutions"]),
            "argmax_agreement_vs_keras": info["parity"]["argmax_agreement"],
            "max_abs_diff_probabilities": info["parity"]["max_abs_diff_probabilities"],
        }
        results["runs"][f"tflite_{q}"] = run
        print(f"tflite {q:8s} ({run['size_mb']:6.1f} MB) : {run['ms_per_image']:8.1f} ms/img "
              f"({run['speedup_vs_keras']:.2f}x Keras' speed), "
              f"argmax agreement {run['argmax_agreement_vs_keras']:.4f}, "
              f"{run['dilated_convolutions']} native dilated convs")
    results["load_after"] = _load()
    print(f"load average after (1/5/15 min): {results['load_after']}")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
