"""The ``keras-deeplab`` command line: train | evaluate | export | predict | crf-search.

``train`` and ``evaluate`` wire arguments into `keras_deeplab.training.experiment`;
``export``, ``predict`` and ``crf-search`` are thin hooks into `keras_deeplab.export` and
`keras_deeplab.inference` (imported only when the subcommand runs).

Examples::

    keras-deeplab train --dataset cityscapes --data-dir /data/cityscapes --model deeplabv3plus \
        --backbone resnet101
    keras-deeplab train --dataset voc --synthetic --epochs 2
    keras-deeplab evaluate --model saved_models/run/best.keras --dataset cityscapes \
        --data-dir /data/cityscapes --sliding-window 769 --output-stride 8
    keras-deeplab export --model best.keras --format tflite --output model.tflite
    keras-deeplab predict --model best.keras --input images/ --output predictions/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

DEFAULTS = {
    # DeepLab's settings per dataset (Chen et al. 2017/2018)
    "cityscapes": dict(crop_size=769, batch_size=8, base_lr=0.01, epochs=200, eval_every=10,
                       sliding_window=769),
    "voc": dict(crop_size=513, batch_size=16, base_lr=0.007, epochs=50, eval_every=5,
                sliding_window=None),
    "folder": dict(crop_size=513, batch_size=8, base_lr=0.01, epochs=50, eval_every=5,
                   sliding_window=None),
    "synthetic": dict(crop_size=128, batch_size=8, base_lr=0.01, epochs=20, eval_every=1,
                      sliding_window=None),
}


def parse_floats(text):
    """argparse type: "0.5,1,1.5" -> (0.5, 1.0, 1.5)."""
    return tuple(float(v) for v in text.split(","))


def add_augment_arguments(p):
    """The augmentation flags shared by ``keras-deeplab train`` and the recipes."""
    g = p.add_argument_group("augmentation (besides --min-scale/--max-scale, random crop, flip)")
    g.add_argument("--augment-on", default="data", choices=["data", "device"],
                   help="augment in tf.data on the CPU, or on the accelerator in the train step")
    g.add_argument("--scale-step", type=float, default=None, help="e.g. 0.25 (DeepLab)")
    g.add_argument("--max-rotation", type=float, default=0.0, help="degrees")
    g.add_argument("--brightness", type=float, default=0.0, help="fraction of 255")
    g.add_argument("--contrast", type=float, default=0.0)
    g.add_argument("--saturation", type=float, default=0.0)
    g.add_argument("--hue", type=float, default=0.0, help="turns (0.5 = 180 degrees)")
    g.add_argument("--blur-prob", type=float, default=0.0, help="Gaussian blur probability")


def augment_from_args(args):
    """The extra `kd.data.AugmentConfig` settings given on the command line."""
    return {"scale_step": args.scale_step, "max_rotation": args.max_rotation,
            "brightness": args.brightness, "contrast": args.contrast,
            "saturation": args.saturation, "hue": args.hue, "blur_prob": args.blur_prob}


def parse_window(text):
    """argparse type: "769" -> 769, "513x1025" -> (513, 1025), "none" -> None."""
    if text in (None, "", "none"):
        return None
    parts = [int(v) for v in text.split("x")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (DeepLab recipe)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="cityscapes", choices=list(DEFAULTS))
    p.add_argument("--data-dir")
    p.add_argument("--num-classes", type=int, default=None, help="folder/synthetic datasets")
    p.add_argument("--run-name", default=None)
    p.add_argument("--runs-dir", default="saved_models")
    p.add_argument("--model", default="deeplabv3plus",
                   choices=["deeplabv3plus", "deeplabv3", "deeplabv2", "fcn", "unet"])
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--backbone-weights", default="imagenet")
    p.add_argument("--output-stride", type=int, default=16, choices=[8, 16, 32])
    p.add_argument("--crop-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--base-lr", type=float, default=None)
    p.add_argument("--power", type=float, default=0.9)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--min-scale", type=float, default=0.5)
    p.add_argument("--max-scale", type=float, default=2.0)
    add_augment_arguments(p)
    p.add_argument("--loss", default="ce", choices=["ce", "ohem", "lovasz", "dice"])
    p.add_argument("--class-weighting", default=None,
                   choices=["median_frequency", "inverse_frequency", "enet"])
    p.add_argument("--aux-weight", type=float, default=0.0)
    p.add_argument("--precision", default="float32",
                   choices=["float32", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "default", "mirrored", "multi_worker", "tpu"])
    p.add_argument("--no-sync-bn", action="store_true")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-sliding-window", type=parse_window, default=None)
    p.add_argument("--eval-scales", type=parse_floats, default=(1.0,))
    p.add_argument("--eval-flip", action="store_true")
    p.add_argument("--image-size", type=int, default=None, help="synthetic dataset image size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--synthetic", action="store_true",
                   help="fake tree of --dataset in its real layout + tiny model (smoke run)")
    p.add_argument("--tiny", action="store_true", help="narrow backbone (smoke runs)")
    p.add_argument("--verbose", type=int, default=1)
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from keras_deeplab.training import experiment

    d = DEFAULTS[args.dataset]
    pick = lambda value, key: d[key] if value is None else value  # noqa: E731
    crop, batch = pick(args.crop_size, "crop_size"), pick(args.batch_size, "batch_size")
    sliding = args.eval_sliding_window or d["sliding_window"]
    data_dir, tiny, weights = args.data_dir, args.tiny, args.backbone_weights
    if weights in ("none", "None", ""):
        weights = None
    image_size = args.image_size
    if args.synthetic and args.dataset != "synthetic":
        data_dir = experiment.prepare_synthetic(args.dataset, data_dir or tempfile.mkdtemp(),
                                                image_size=64, seed=args.seed)
    if args.synthetic:
        tiny, weights, crop, batch, sliding = True, None, min(crop, 64), min(batch, 4), None
        args.eval_every = 1
        image_size = image_size or 64
    if args.dataset in ("cityscapes", "voc", "folder") and not data_dir:
        raise SystemExit(f"--data-dir is required for --dataset {args.dataset} (or --synthetic).")
    run_name = args.run_name or f"{args.model}_{args.backbone}_{args.dataset}"
    summary = experiment.train(
        dataset=args.dataset, data_dir=data_dir, run_dir=os.path.join(args.runs_dir, run_name),
        model=args.model, backbone=args.backbone, output_stride=args.output_stride,
        backbone_weights=weights, tiny=tiny, num_classes=args.num_classes,
        train_split=args.train_split, val_split=args.val_split, crop_size=crop,
        batch_size=batch, epochs=pick(args.epochs, "epochs"),
        steps_per_epoch=args.steps_per_epoch, base_lr=pick(args.base_lr, "base_lr"),
        power=args.power, momentum=args.momentum, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, min_scale=args.min_scale, max_scale=args.max_scale,
        loss=args.loss, class_weighting=args.class_weighting, aux_weight=args.aux_weight,
        precision=args.precision, strategy=args.strategy, sync_bn=not args.no_sync_bn,
        augment=augment_from_args(args), augment_on=args.augment_on,
        eval_every=pick(args.eval_every, "eval_every"), eval_sliding_window=sliding,
        eval_scales=args.eval_scales, eval_flip=args.eval_flip, image_size=image_size,
        seed=args.seed, overwrite=args.overwrite, recipe="keras-deeplab " + " ".join(
            sys.argv[1:]), verbose=args.verbose)
    miou = summary["val_miou"]
    print(f"Run {summary['run_dir']}: val mIoU "
          f"{'n/a' if miou is None else f'{100 * miou:.2f}%'}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=".keras file")
    p.add_argument("--dataset", default="cityscapes",
                   choices=["cityscapes", "voc", "folder", "synthetic"])
    p.add_argument("--data-dir")
    p.add_argument("--split", default="val")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--sliding-window", type=parse_window, default=None)
    p.add_argument("--scales", type=parse_floats, default=(1.0,))
    p.add_argument("--flip", action="store_true")
    p.add_argument("--output-stride", type=int, default=None, choices=[8, 16, 32])
    p.add_argument("--export-dir", default=None, help="Cityscapes: write labelId PNGs")
    p.add_argument("--official", action="store_true", help="Cityscapes: run cityscapesscripts")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--json", default=None, help="write results to this JSON file")
    p.add_argument("--verbose", type=int, default=1)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args):
    from keras_deeplab.training import experiment

    results = experiment.evaluate(
        args.model, args.dataset, args.data_dir, args.split, args.num_classes,
        args.sliding_window, args.scales, args.flip, args.output_stride, args.export_dir,
        args.official, image_size=args.image_size, verbose=args.verbose)
    results.pop("confusion_matrix", None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="export to SavedModel or TFLite (keras_deeplab.export)")
    p.add_argument("--model", required=True, help=".keras file")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "tflite"])
    p.add_argument("--output", required=True)
    p.add_argument("--quantization", default=None, choices=[None, "float16", "int8"])
    p.add_argument("--input-size", type=parse_window, default=None, help="TFLite static size")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    import keras

    from keras_deeplab import export

    model = keras.models.load_model(args.model)
    if args.format == "saved_model":
        export.saved_model(model, args.output)
    else:
        size = args.input_size
        if isinstance(size, int):
            size = (size, size)
        export.tflite(model, args.output, quantization=args.quantization, input_size=size)
    print(f"Exported {args.model} -> {args.output}")
    return 0


def _add_predict(sub):
    p = sub.add_parser("predict", help="segment images (keras_deeplab.inference.Predictor)")
    p.add_argument("--model", required=True, help=".keras, SavedModel dir or .tflite")
    p.add_argument("--input", required=True, help="an image file or a folder")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--sliding-window", type=parse_window, default=None)
    p.add_argument("--palette", default="cityscapes")
    p.add_argument("--crf", action="store_true", help="dense CRF post-processing")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args):
    from keras_deeplab import inference

    crf = inference.DenseCRF() if args.crf else None
    predictor = inference.Predictor(args.model, crf=crf, sliding_window=args.sliding_window,
                                    palette=args.palette)
    if os.path.isdir(args.input):
        predictor.predict_folder(args.input, args.output)
    else:
        predictor.predict_files([args.input], args.output)
    print(f"Predictions written to {args.output}")
    return 0


def _add_crf_search(sub):
    p = sub.add_parser("crf-search", help="grid-search dense CRF parameters on validation data")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="voc", choices=["cityscapes", "voc", "folder"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=100)
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=cmd_crf_search)


def cmd_crf_search(args):
    import numpy as np

    from keras_deeplab import inference
    from keras_deeplab.data.batches import iterate_batches
    from keras_deeplab.training import experiment

    if args.dataset == "cityscapes":
        from keras_deeplab.evaluation.cityscapes import cityscapes_eval_batches

        data = cityscapes_eval_batches(args.data_dir, args.split)
    else:
        data = experiment.load_dataset(args.dataset, args.data_dir, args.split, False, 1,
                                       num_classes=args.num_classes)
    images, labels = [], []
    for x, y in iterate_batches(data, max_batches=args.max_images):
        images += list(np.asarray(x))
        labels += list(np.asarray(y)[..., 0])
    result = inference.crf_search(inference.Predictor(args.model), images, labels,
                                  max_images=args.max_images)
    print(result)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-deeplab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_predict(sub)
    _add_crf_search(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
