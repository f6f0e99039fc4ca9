"""Evaluate a trained model (.keras) on Cityscapes, VOC or a folder dataset.

    python recipes/evaluate.py --model saved_models/run/best.keras --dataset cityscapes \
        --data-dir /data/cityscapes --sliding-window 769 --output-stride 8 \
        --scales 0.75,1.0,1.25 --flip --export-dir results/val --official
    python recipes/evaluate.py --synthetic          # trains nothing: tiny random model, fake tree
"""

import argparse
import json
import tempfile

from _common import floats, window


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help=".keras file")
    p.add_argument("--dataset", default="cityscapes", choices=["cityscapes", "voc", "folder"])
    p.add_argument("--data-dir")
    p.add_argument("--split", default="val")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--sliding-window", type=window, default=None)
    p.add_argument("--scales", type=floats, default=(1.0,))
    p.add_argument("--flip", action="store_true")
    p.add_argument("--output-stride", type=int, default=None, choices=[8, 16, 32])
    p.add_argument("--export-dir", default=None, help="Cityscapes: write labelId PNGs here")
    p.add_argument("--official", action="store_true",
                   help="Cityscapes: also run cityscapesscripts on the exported PNGs")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--synthetic", action="store_true",
                   help="fake tree + tiny untrained model: checks the whole evaluation path")
    p.add_argument("--verbose", type=int, default=1)
    return p


def main(argv=None):
    from keras_deeplab.training import experiment

    args = parser().parse_args(argv)
    model, data_dir = args.model, args.data_dir
    if args.synthetic:
        data_dir = experiment.prepare_synthetic(args.dataset, data_dir or tempfile.mkdtemp(),
                                                image_size=32, num_images={"val": 2})
        model = experiment.build_model(num_classes=args.num_classes
                                       or experiment.NUM_CLASSES.get(args.dataset, 6), tiny=True)
        if args.dataset == "cityscapes" and args.export_dir is None:
            args.export_dir, args.official = tempfile.mkdtemp(), True
    elif not (model and data_dir):
        raise SystemExit("--model and --data-dir are required (or --synthetic).")
    results = experiment.evaluate(model, args.dataset, data_dir, args.split, args.num_classes,
                                  args.sliding_window, args.scales, args.flip,
                                  args.output_stride, args.export_dir, args.official,
                                  verbose=args.verbose)
    results.pop("confusion_matrix", None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return results


if __name__ == "__main__":
    main()
