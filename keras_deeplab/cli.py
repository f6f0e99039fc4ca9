"""The ``keras-deeplab`` command line: train | evaluate | export | predict | crf-search.

``train`` and ``evaluate`` wire arguments into `keras_deeplab.training.experiment`;
``export``, ``predict`` and ``crf-search`` are thin hooks into `keras_deeplab.export` and
`keras_deeplab.inference` (imported only when the subcommand runs). The run, data, model,
optimisation and evaluation flags are built from the dataclasses of
`keras_deeplab.training.config` (each flag's type, default, help and choices are declared
there once; ``--help`` shows every default).

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
import os
import sys

from keras_deeplab.training.config import (
    add_arguments,
    add_evaluate_arguments,
    add_train_arguments,
    config_from_args,
    parse_window,
)

_HELP = argparse.ArgumentDefaultsHelpFormatter


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (DeepLab recipe)", formatter_class=_HELP,
                       description="Flags map one to one onto the fields of "
                       "keras_deeplab.training.config.RunConfig.")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from keras_deeplab.training import experiment

    experiment.train_command(args, recipe="keras-deeplab " + " ".join(sys.argv[1:]))
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model", formatter_class=_HELP)
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args):
    from keras_deeplab.training import experiment

    experiment.evaluate_command(args)
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="export to SavedModel or TFLite (keras_deeplab.export)",
                       formatter_class=_HELP)
    p.add_argument("--model", required=True, help=".keras file")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "tflite"],
                   help="output format")
    p.add_argument("--output", required=True, help="output path")
    p.add_argument("--quantization", default=None, choices=[None, "float16", "int8"],
                   help="TFLite quantization")
    p.add_argument("--input-size", type=parse_window, default=None, help="TFLite static size")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    import keras

    from keras_deeplab.export.saved_model import saved_model
    from keras_deeplab.export.tflite import tflite

    model = keras.models.load_model(args.model)
    if args.format == "saved_model":
        saved_model(model, args.output)
    else:
        size = args.input_size
        if isinstance(size, int):
            size = (size, size)
        tflite(model, args.output, quantization=args.quantization, input_size=size)
    print(f"Exported {args.model} -> {args.output}")
    return 0


#: The EvalConfig settings `kd.inference.Predictor` takes.
PREDICT_EVAL_FIELDS = ("sliding_window", "overlap", "scales", "flip", "output_stride")


def _add_predict(sub):
    p = sub.add_parser("predict", help="segment images (keras_deeplab.inference.Predictor)",
                       formatter_class=_HELP)
    p.add_argument("--model", required=True, help=".keras, SavedModel dir or .tflite")
    p.add_argument("--input", required=True, help="an image file or a folder")
    p.add_argument("--output", required=True, help="output folder")
    add_arguments(p, "eval", only=PREDICT_EVAL_FIELDS)
    p.add_argument("--palette", default="cityscapes", help="colour palette of the overlays")
    p.add_argument("--crf", action="store_true", help="dense CRF post-processing")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args):
    from keras_deeplab.inference.crf import DenseCRF
    from keras_deeplab.inference.predictor import Predictor

    try:
        ev = config_from_args(args, "eval")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    crf = DenseCRF() if args.crf else None
    predictor = Predictor(
        args.model, crf=crf, palette=args.palette,
        **{name: getattr(ev, name) for name in PREDICT_EVAL_FIELDS})
    if os.path.isdir(args.input):
        predictor.predict_folder(args.input, args.output)
    else:
        predictor.predict_files([args.input], args.output)
    print(f"Predictions written to {args.output}")
    return 0


def _add_crf_search(sub):
    p = sub.add_parser("crf-search", help="grid-search dense CRF parameters on validation data",
                       formatter_class=_HELP)
    p.add_argument("--model", required=True, help=".keras file")
    add_arguments(p, "data", only=("dataset", "data_dir", "num_classes", "val_split"),
                  defaults={"dataset": "voc"}, flags={"val_split": "--split"})
    p.add_argument("--max-images", type=int, default=100, help="images searched on")
    p.set_defaults(func=cmd_crf_search)


def cmd_crf_search(args):
    import numpy as np

    from keras_deeplab.data.batches import iterate_batches
    from keras_deeplab.inference.crf_search import crf_search
    from keras_deeplab.inference.predictor import Predictor
    from keras_deeplab.training import experiment

    try:
        data = config_from_args(args, "data")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    batches = experiment.load_dataset(data, data.val_split, training=False, batch_size=1)
    images, labels = [], []
    for x, y in iterate_batches(batches, max_batches=args.max_images):
        images += list(np.asarray(x))
        labels += list(np.asarray(y)[..., 0])
    result = crf_search(Predictor(args.model), images, labels,
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
