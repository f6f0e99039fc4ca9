"""Argument parsing shared by the recipes (no logic: every option maps to a keyword argument
of `keras_deeplab.training.experiment.train` / `evaluate`)."""

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)


from keras_deeplab.cli import add_augment_arguments, augment_from_args  # noqa: E402
from keras_deeplab.cli import parse_floats as floats  # noqa: E402
from keras_deeplab.cli import parse_window as window  # noqa: E402


def train_parser(description, dataset, defaults):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", help=f"{dataset} root (official layout)")
    p.add_argument("--run-name", default=f"{defaults['model']}_{defaults['backbone']}_{dataset}")
    p.add_argument("--runs-dir", default="saved_models", help="parent of the run directory")
    p.add_argument("--model", default=defaults["model"],
                   choices=["deeplabv3plus", "deeplabv3", "deeplabv2", "fcn", "unet"])
    p.add_argument("--backbone", default=defaults["backbone"])
    p.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet', a .weights.h5 path, or 'none'")
    p.add_argument("--output-stride", type=int, default=16, choices=[8, 16, 32])
    p.add_argument("--crop-size", type=int, default=defaults["crop_size"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--base-lr", type=float, default=defaults["base_lr"])
    p.add_argument("--power", type=float, default=0.9)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5, help="on kernels only")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--min-scale", type=float, default=0.5)
    p.add_argument("--max-scale", type=float, default=2.0)
    add_augment_arguments(p)
    p.add_argument("--loss", default="ce", choices=["ce", "ohem", "lovasz", "dice"])
    p.add_argument("--class-weighting", default=None,
                   choices=["median_frequency", "inverse_frequency", "enet"])
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="> 0 adds an auxiliary head with this loss weight")
    p.add_argument("--precision", default="float32",
                   choices=["float32", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "default", "mirrored", "multi_worker", "tpu"])
    p.add_argument("--no-sync-bn", action="store_true", help="plain BN with several replicas")
    p.add_argument("--train-split", default=defaults["train_split"])
    p.add_argument("--val-split", default="val")
    p.add_argument("--eval-every", type=int, default=defaults["eval_every"])
    p.add_argument("--eval-sliding-window", type=window, default=defaults.get("sliding_window"),
                   help="crop size for sliding-window validation, e.g. 769 or 769x769")
    p.add_argument("--eval-scales", type=floats, default=(1.0,))
    p.add_argument("--eval-flip", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="restart an existing run")
    p.add_argument("--synthetic", action="store_true",
                   help=f"write a small fake {dataset} tree and train a tiny model on it")
    p.add_argument("--synthetic-images", type=int, default=8)
    p.add_argument("--synthetic-size", type=int, default=64)
    p.add_argument("--verbose", type=int, default=1)
    return p


def train_from_args(args, dataset):
    """Maps parsed arguments onto `experiment.train` (and sets up --synthetic)."""
    from keras_deeplab.training import experiment

    data_dir, tiny, weights = args.data_dir, False, args.backbone_weights
    eval_every = args.eval_every
    crop, batch, sliding = args.crop_size, args.batch_size, args.eval_sliding_window
    steps = args.steps_per_epoch
    if weights in ("none", "None", ""):
        weights = None
    if args.synthetic:
        data_dir = experiment.prepare_synthetic(
            dataset, data_dir or tempfile.mkdtemp(prefix=f"fake_{dataset}_"),
            image_size=args.synthetic_size,
            num_images={"train": args.synthetic_images, "val": max(2, args.synthetic_images // 4)},
            seed=args.seed)
        tiny, weights, eval_every = True, None, 1
        crop, batch = min(crop, args.synthetic_size), min(batch, 4)
        sliding = None if sliding is None else min(
            sliding if isinstance(sliding, int) else max(sliding), args.synthetic_size)
    elif not data_dir:
        raise SystemExit(f"--data-dir is required (or --synthetic). It must hold the {dataset} "
                         "tree in its official layout.")
    run_dir = os.path.join(args.runs_dir, args.run_name)
    summary = experiment.train(
        dataset=dataset, data_dir=data_dir, run_dir=run_dir, model=args.model,
        backbone=args.backbone, output_stride=args.output_stride, backbone_weights=weights,
        tiny=tiny, train_split=args.train_split, val_split=args.val_split, crop_size=crop,
        batch_size=batch, epochs=args.epochs, steps_per_epoch=steps, base_lr=args.base_lr,
        power=args.power, momentum=args.momentum, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, min_scale=args.min_scale, max_scale=args.max_scale,
        loss=args.loss, class_weighting=args.class_weighting, aux_weight=args.aux_weight,
        precision=args.precision, strategy=args.strategy, sync_bn=not args.no_sync_bn,
        augment=augment_from_args(args), augment_on=args.augment_on, eval_every=eval_every,
        eval_sliding_window=sliding, eval_scales=args.eval_scales,
        eval_flip=args.eval_flip, seed=args.seed, overwrite=args.overwrite,
        recipe=" ".join(sys.argv), verbose=args.verbose)
    miou = summary["val_miou"]
    print(f"Run {run_dir}: {args.epochs} epochs in {summary['seconds']:.0f} s; "
          f"val mIoU {'n/a' if miou is None else f'{100 * miou:.2f}%'}")
    return summary
