"""The ``keras-deeplab`` command line: train | evaluate | export | predict | crf-search |
pretrained | convert.

``train`` and ``evaluate`` wire arguments into `keras_deeplab.training.experiment`;
``export``, ``predict``, ``crf-search``, ``pretrained`` and ``convert`` are thin hooks into
`keras_deeplab.export`, `keras_deeplab.inference` and `keras_deeplab.pretrained`. The run,
data, model, optimisation and evaluation flags are built from the dataclasses of
`keras_deeplab.training.config` (each flag's type, default, help and choices are declared
there once; ``--help`` shows every default).

Building the parser imports neither TensorFlow nor Keras (the stages are imported only when
a subcommand runs), so ``keras-deeplab --help`` answers at once.

Exit status: 0 on success; 2 for a command-line mistake (an unknown flag, a bad value, a
missing file or folder, an invalid setting: one ``error:`` line, no traceback); 1 when the
command fails while running (an unreadable input, a failed export check, ...; a one-line
``error:`` too); 130 on Ctrl-C. ``--debug`` shows the traceback of any failure.

Examples::

    keras-deeplab train --dataset cityscapes --data-dir /data/cityscapes --backbone resnet101
    keras-deeplab train --dataset voc --synthetic --epochs 2
    keras-deeplab evaluate --model saved_models/run/best.keras --dataset cityscapes \\
        --data-dir /data/cityscapes --sliding-window 769 --output-stride 8 --json val.json
    keras-deeplab export --model best.keras --format tflite --quantization int8 \\
        --input-size 513 --calibration-data images/ --output model_int8.tflite
    keras-deeplab predict --model best.keras --input images/ --output predictions/
    keras-deeplab crf-search --model best.keras --dataset voc --data-dir /data/VOCdevkit
    keras-deeplab pretrained list
    keras-deeplab convert --from torchvision deeplabv3_resnet50_coco-cd0a2569.pth \\
        --arch deeplabv3_resnet50 --output deeplabv3_resnet50.keras
    keras-deeplab convert --from tf-deeplab model.ckpt --arch deeplabv3plus_xception65 \\
        --output m.keras
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys


def _defer_training_package():
    """Makes ``keras_deeplab.training`` importable without running its ``__init__`` (which
    imports Keras), so the flags of `keras_deeplab.training.config` load without a
    framework; `load_stages` runs the ``__init__`` before a subcommand. Only when the package
    root was imported by the console script without its stages (``keras_deeplab/__init__.py``);
    otherwise the package is already complete and nothing is deferred."""
    if "keras_deeplab.training" in sys.modules:
        return None
    spec = importlib.util.find_spec("keras_deeplab.training")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    return spec, module


_DEFERRED = _defer_training_package()


def load_stages(quiet=True):
    """Completes the package the console script imported lazily: runs the deferred
    ``keras_deeplab.training/__init__`` and imports every stage, so every serializable class
    is registered (as after ``import keras_deeplab``).

    Args:
        quiet: bool. Discard what the frameworks' C++ code writes to the standard error
            while they load (TensorFlow's absl lines "All log messages before
            absl::InitializeLog() ...", oneDNN and CUDA notices, which
            ``TF_CPP_MIN_LOG_LEVEL`` does not silence). Python errors still show.
    """
    global _DEFERRED
    with _quiet_stderr() if quiet else _nothing():
        if _DEFERRED is not None:
            spec, module = _DEFERRED
            _DEFERRED = None
            spec.loader.exec_module(module)
        for stage in sys.modules["keras_deeplab"].STAGES:  # the root: cli's parent package
            importlib.import_module(f"keras_deeplab.{stage}")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _quiet_stderr:
    """Points file descriptor 2 at /dev/null for the duration (C++ logging writes there
    directly); Python's ``sys.stderr`` object is restored unchanged."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(self._null, 2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. captured)
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            os.close(self._null)
        return False


from keras_deeplab.training.config import (  # noqa: E402
    DATASETS,
    add_arguments,
    add_evaluate_arguments,
    add_train_arguments,
    config_from_args,
    parse_window,
)
from keras_deeplab.version import __version__  # noqa: E402

# Image files `predict` and `--calibration-data` read from a folder.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class UsageError(ValueError):
    """A command-line mistake found after parsing (a missing file, an empty folder ...):
    exit status 2, one ``error:`` line."""


class _HELP(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default and keeps the examples' line breaks."""


def _subparser(sub, name, help, examples, description=None):
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=description or help,
                          formatter_class=_HELP, epilog=epilog)


# --- train / evaluate ------------------------------------------------------------------------
def _add_train(sub):
    p = _subparser(sub, "train", "train a model (DeepLab recipe)", [
        "keras-deeplab train --dataset cityscapes --data-dir /data/cityscapes "
        "--backbone resnet101",
        "keras-deeplab train --dataset folder --data-dir mydata --num-classes 25 "
        "--crop-size 321",
        "keras-deeplab train --dataset voc --synthetic --epochs 2   # smoke run, fake VOC tree",
    ], description="Train a model; the flags map one to one onto the fields of "
       "keras_deeplab.training.config.RunConfig. The run folder <runs-dir>/<run-name> gets "
       "best.keras, last.keras, manifest.json, history.csv, training_curve.png, report.md "
       "and TensorBoard logs. Folder datasets: <data-dir>/<split>/images/*.png|jpg and "
       "<data-dir>/<split>/masks/<same stem>.png (class ids, 255 = ignore).")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from keras_deeplab.training import experiment

    experiment.train_command(args, recipe="keras-deeplab " + " ".join(sys.argv[1:]))
    return 0


def _add_evaluate(sub):
    p = _subparser(sub, "evaluate", "evaluate a saved model on a dataset split", [
        "keras-deeplab evaluate --model best.keras --dataset cityscapes --data-dir "
        "/data/cityscapes --sliding-window 769 --output-stride 8 --json val.json",
        "keras-deeplab evaluate --model best.keras --dataset folder --data-dir mydata "
        "--num-classes 25 --json val.json --plot-confusion confusion.png",
        "keras-deeplab evaluate --model saved_models/<run>/best.keras --dataset voc --synthetic",
    ], description="Score a model (mIoU, per-class IoU, pixel accuracy, confusion matrix) "
       "with the prediction engine the Predictor uses. --json writes valid JSON (null for "
       "classes absent from labels and predictions) with the model, the settings and the "
       "confusion matrix. With --synthetic and no --data-dir, the fake tree of the training "
       "run next to --model (<run>/fake_data) is reused.")
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args):
    from keras_deeplab.training import experiment

    if args.model is not None:
        _check_model_path(args.model)
    experiment.evaluate_command(args)
    return 0


# --- export ----------------------------------------------------------------------------------
def _add_export(sub):
    p = _subparser(sub, "export", "export to SavedModel or TFLite (keras_deeplab.export)", [
        "keras-deeplab export --model best.keras --format saved_model --output exported/",
        "keras-deeplab export --model best.keras --format tflite --quantization float16 "
        "--output model_fp16.tflite",
        "keras-deeplab export --model best.keras --format tflite --quantization int8 "
        "--input-size 64x128 --calibration-data images/ --output int8.tflite",
        "keras-deeplab export --model best.keras --format tflite --quantization int8 "
        "--input-size 513 --calibration-data voc --calibration-root /data/VOCdevkit "
        "--output int8.tflite",
    ], description="Export a .keras model. TFLite options are those of "
       "keras_deeplab.export.tflite; int8 needs calibration images (--calibration-data: a "
       "folder of images, or a dataset name with --calibration-root).")
    p.add_argument("--model", required=True, help=".keras file")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "tflite"],
                   help="output format")
    p.add_argument("--output", required=True, help="output path (.tflite file or SavedModel "
                   "folder)")
    g = p.add_argument_group("TFLite (keras_deeplab.export.tflite)")
    g.add_argument("--quantization", default="none", choices=["none", "float16", "int8"],
                   help="none: float32; float16 weights; int8: full-integer, calibrated on "
                   "--calibration-data")
    g.add_argument("--input-size", type=parse_window, default="none",
                   help="fixed input size, 513 or 513x1025 (none: dynamic)")
    g.add_argument("--batch-size", type=_opt_int, default=1,
                   help="exported batch size (none: dynamic)")
    g.add_argument("--uint8-input", action="store_true", help="uint8 image input")
    g.add_argument("--calibration-data", default="none",
                   help="int8 calibration images: a folder of images, or a dataset name ("
                   + ", ".join(DATASETS) + ") read from --calibration-root")
    g.add_argument("--calibration-root", default="none",
                   help="root of the --calibration-data dataset (its official layout)")
    g.add_argument("--calibration-split", default="train", help="split of the calibration "
                   "dataset")
    g.add_argument("--num-classes", type=_opt_int, default="none",
                   help="classes of a folder calibration dataset")
    g.add_argument("--num-calibration-images", type=int, default=100,
                   help="calibration images used")
    g.add_argument("--num-parity-images", type=int, default=4,
                   help="images of the TFLite-vs-Keras parity check")
    g.add_argument("--min-argmax-agreement", type=_opt_float, default="none",
                   help="fail below this TFLite-vs-Keras label agreement, in [0, 1]")
    g.add_argument("--no-op-check", dest="check", action="store_false",
                   help="do not fail on Flex/custom or space-to-batch ops")
    p.set_defaults(func=cmd_export)


def _opt_int(text):
    return None if text in (None, "none", "None", "") else int(text)


def _opt_float(text):
    return None if text in (None, "none", "None", "") else float(text)


def _none(value):
    return None if value in (None, "none", "None", "") else value


def _image_files(folder):
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(folder, f))]


def calibration_images(source, root=None, split="train", num_images=100, num_classes=None):
    """int8 calibration images of ``export --calibration-data``: a list of float32
    (H, W, 3) images in [0, 255] from a folder of images, or from a dataset (one of
    `config.DATASETS`) at ``root`` (its ``split``, unaugmented). A dataset name with a
    ``root`` is the dataset even where a folder of that name exists.

    Raises:
        UsageError: a folder without images, an unknown name, a dataset without its root.
    """
    import numpy as np

    if os.path.isdir(source) and not (source in DATASETS and root is not None):
        files = _image_files(source)
        if not files:
            raise UsageError(f"--calibration-data {source}: the folder holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}).")
        from keras_deeplab.inference.image_io import read_image

        return [np.asarray(read_image(f), np.float32) for f in files[:num_images]]
    if source not in DATASETS:
        raise UsageError(f"--calibration-data {source!r} is neither a folder nor a dataset "
                         f"name ({', '.join(DATASETS)}).")
    from keras_deeplab.data.batches import take_images
    from keras_deeplab.training import experiment
    from keras_deeplab.training.config import DataConfig

    try:
        data = DataConfig(source, root, num_classes=num_classes, val_split=split)
    except ValueError as e:
        raise UsageError(str(e).replace("--data-dir", "--calibration-root")) from None
    batches = experiment.load_dataset(data, split, training=False, batch_size=1)
    images, _ = take_images(batches, num_images)
    return [np.asarray(im, np.float32) for im in images]


def cmd_export(args):
    if args.format == "saved_model":
        tflite_only = {"quantization": "none", "calibration_data": "none",
                       "input_size": None, "uint8_input": False}
        given = [k for k, v in tflite_only.items() if getattr(args, k) != v]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} applies to --format tflite.")
    quantization = _none(args.quantization)
    calibration = _none(args.calibration_data)
    if quantization == "int8" and calibration is None:
        raise UsageError("--quantization int8 needs calibration images: --calibration-data "
                         "a folder of images, or a dataset name with --calibration-root.")
    if calibration is not None and quantization != "int8":
        raise UsageError("--calibration-data is used by --quantization int8 only.")
    _check_model_path(args.model)
    import keras

    import keras_deeplab.models  # noqa: F401  (registers the classes load_model needs)

    model = keras.models.load_model(args.model, compile=False)
    if args.format == "saved_model":
        from keras_deeplab.export.saved_model import saved_model

        saved_model(model, args.output)
    else:
        from keras_deeplab.export.tflite import tflite

        size = args.input_size
        if isinstance(size, int):
            size = (size, size)
        data = None
        if calibration is not None:
            data = calibration_images(calibration, _none(args.calibration_root),
                                      args.calibration_split, args.num_calibration_images,
                                      args.num_classes)
        tflite(model, args.output, quantization=quantization, representative_data=data,
               input_size=size, uint8_input=args.uint8_input, batch_size=args.batch_size,
               num_calibration_images=args.num_calibration_images,
               num_parity_images=args.num_parity_images,
               min_argmax_agreement=args.min_argmax_agreement, check=args.check)
    print(f"Exported {args.model} -> {args.output}")
    return 0


# --- predict ---------------------------------------------------------------------------------
#: The EvalConfig settings `kd.inference.Predictor` takes.
PREDICT_EVAL_FIELDS = ("sliding_window", "overlap", "scales", "flip", "output_stride")


def _add_predict(sub):
    p = _subparser(sub, "predict", "segment images (keras_deeplab.inference.Predictor)", [
        "keras-deeplab predict --model best.keras --input street.png --output out/",
        "keras-deeplab predict --model best.keras --input images/ --output out/ "
        "--sliding-window 769 --scales 0.75,1,1.25 --flip",
        "keras-deeplab predict --model deeplabv3_resnet50.torchvision_coco_voc --input "
        "photo.jpg --output out/",
        "keras-deeplab predict --model best.keras --input images/ --output out/ "
        "--crf-params crf_search.json",
        "keras-deeplab predict --model best.keras --input images/ --output out/ "
        "--palette my_palette.txt",
    ], description="Writes per image <stem>_labels.png (a palette PNG: pixel values are the "
       "class ids, viewers show the colours), <stem>_color.png, <stem>_overlay.png and "
       "<stem>_legend.png (the overlay with the classes present, named by the model's "
       "class_names or as 'class N'), and legend.png (every class). Exit status 2 when "
       "--input does not exist or holds no images, 1 when an image could not be read (the "
       "others are still written).")
    p.add_argument("--model", required=True, help=".keras file, SavedModel folder, .tflite "
                   "file, or a pretrained checkpoint name (keras-deeplab pretrained list)")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="output folder")
    add_arguments(p, "eval", only=PREDICT_EVAL_FIELDS)
    p.add_argument("--palette", default="none",
                   help="cityscapes, voc, generated (any class count), or a palette file "
                   "(.json list of [r, g, b], or one 'r g b [class name]' line per class) "
                   "(none: the model's own, cityscapes for 19 classes, else generated)")
    p.add_argument("--crf", action="store_true",
                   help="dense CRF post-processing with the default parameters")
    p.add_argument("--crf-params", default="none",
                   help="dense CRF with the parameters `keras-deeplab crf-search` wrote "
                   "(its .json)")
    p.add_argument("--outputs", default="labels,color,overlay,legend",
                   help="what to write per image: labels, color, overlay, legend, "
                   "probabilities")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.set_defaults(func=cmd_predict)


def _check_model_path(path):
    if not os.path.exists(path):
        raise UsageError(f"--model {path} does not exist.")


def _load_model_arg(name):
    """--model: a path, or a pretrained checkpoint name (built with from_pretrained)."""
    if os.path.exists(name):
        return name
    if "/" in name or os.sep in name or name.endswith((".keras", ".tflite", ".h5")):
        raise UsageError(f"--model {name} does not exist.")
    from keras_deeplab.pretrained.registry import list_pretrained

    names = [row["name"] for row in list_pretrained()]
    if name not in names:
        raise UsageError(f"--model {name!r} is neither a file nor a pretrained checkpoint "
                         f"(keras-deeplab pretrained list: {', '.join(names)}).")
    from keras_deeplab.models import from_pretrained

    return from_pretrained(name)


def cmd_predict(args):
    from keras_deeplab.inference.result import OUTPUTS

    if not os.path.exists(args.input):
        raise UsageError(f"--input {args.input} does not exist.")
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown or not outputs:
        raise UsageError(f"--outputs {args.outputs!r}: expected some of {', '.join(OUTPUTS)}.")
    if args.crf and _none(args.crf_params):
        raise UsageError("give --crf (default parameters) or --crf-params FILE, not both.")
    palette, names = _none(args.palette), None
    if palette is not None:
        from keras_deeplab.data.palette import PALETTES, read_palette_file

        if palette.lower() not in (*PALETTES, "generated"):
            if not os.path.isfile(palette):
                raise UsageError(f"--palette {palette!r} is neither a palette name "
                                 f"({', '.join([*PALETTES, 'generated'])}) nor a file.")
            colours, names = read_palette_file(palette)
            palette = colours.tolist()
    try:
        ev = config_from_args(args, "eval")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if os.path.isdir(args.input):
        walk = (os.walk(args.input) if args.recursive else [(args.input, [], [])])
        files = []
        for root, dirs, _ in walk:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += _image_files(root)
        if not files:
            raise UsageError(f"--input {args.input} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}).")
    else:
        files = [args.input]
    from keras_deeplab.inference.predictor import Predictor

    crf = None
    if args.crf:
        from keras_deeplab.inference.crf import DenseCRF

        crf = DenseCRF()
    elif _none(args.crf_params):
        from keras_deeplab.inference.crf_search import load_crf_params

        crf, record = load_crf_params(args.crf_params)
        if record.get("helps") is False:
            print(f"note: {args.crf_params} says: {record.get('verdict')}", file=sys.stderr)
    model = _load_model_arg(args.model)
    try:
        predictor = Predictor(model, crf=crf, palette=palette, class_names=names,
                              **{name: getattr(ev, name) for name in PREDICT_EVAL_FIELDS})
    except ValueError as e:  # a palette shorter than the classes: name the flag
        raise UsageError(str(e).replace("Palette ", "--palette ", 1)) from None
    report = predictor.predict_files(files, args.output, outputs=outputs)
    if predictor.num_classes is not None:
        _write_legend(predictor, os.path.join(args.output, "legend.png"))
    written, failed = len(report["written"]), len(report["failed"])
    print(f"{written} image(s) predicted -> {args.output}"
          + (f"; {failed} could not be read" if failed else ""))
    if not written:
        raise RuntimeError(f"no image of --input {args.input} could be read.")
    return 1 if failed else 0


def _write_legend(predictor, path):
    from PIL import Image

    from keras_deeplab.data.palette import class_labels, legend

    names = class_labels(predictor.num_classes, predictor.class_names)
    Image.fromarray(legend(names, predictor.palette)).save(path)


# --- crf-search ------------------------------------------------------------------------------
def _add_crf_search(sub):
    p = _subparser(sub, "crf-search", "grid-search dense CRF parameters on validation data", [
        "keras-deeplab crf-search --model best.keras --dataset voc --data-dir /data/VOCdevkit "
        "--output crf_search.json",
        "keras-deeplab predict --model best.keras --input images/ --output out/ "
        "--crf-params crf_search.json",
    ], description="DeepLab v2's coarse-to-fine search of the CRF's bilateral kernel. Writes "
       "--output (.json: verdict, baseline and best mIoU, the CRF config for predict "
       "--crf-params, the table) and the table as .csv next to it, and prints the verdict "
       "('CRF does not help this model' when no setting beats the model without CRF).")
    p.add_argument("--model", required=True, help=".keras file")
    add_arguments(p, "data", only=("dataset", "data_dir", "num_classes", "val_split",
                                   "synthetic", "synthetic_images", "image_size"),
                  defaults={"dataset": "voc"}, flags={"val_split": "--split"})
    p.add_argument("--max-images", type=int, default=100, help="images searched on")
    p.add_argument("--output", default="crf_search.json",
                   help="result .json (the table goes to the .csv of the same name)")
    p.add_argument("--coarse-only", action="store_true", help="skip the fine grid")
    p.set_defaults(func=cmd_crf_search)


def cmd_crf_search(args):
    _check_model_path(args.model)
    import numpy as np

    from keras_deeplab.data.batches import iterate_batches
    from keras_deeplab.inference.crf_search import crf_search
    from keras_deeplab.inference.predictor import Predictor
    from keras_deeplab.training import experiment

    try:
        data = config_from_args(args, "data")
    except ValueError as e:
        raise UsageError(str(e)) from None
    with experiment.synthetic_data(data, args.model, splits=(data.val_split,)) as data:
        batches = experiment.load_dataset(data, data.val_split, training=False, batch_size=1)
        images, labels = [], []
        for x, y in iterate_batches(batches, max_batches=args.max_images):
            images += list(np.asarray(x))
            labels += list(np.asarray(y)[..., 0])
    if not images:
        raise UsageError(f"--split {data.val_split} of {data.data_dir} holds no images.")
    result = crf_search(Predictor(args.model), images, labels, max_images=args.max_images,
                        fine=not args.coarse_only, verbose=False)
    print(result.to_markdown())
    json_path, csv_path = result.save(args.output)
    print(f"Wrote {json_path} and {csv_path}.")
    return 0


# --- pretrained / convert --------------------------------------------------------------------
def _add_pretrained(sub):
    p = _subparser(sub, "pretrained", "published segmentation checkpoints", [
        "keras-deeplab pretrained list",
        "keras-deeplab pretrained list --json",
    ], description="Checkpoints `keras-deeplab predict --model NAME` and "
       "kd.models.from_pretrained(NAME) build (keras_deeplab.pretrained).")
    p.add_argument("action", choices=["list"], help="what to do")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=cmd_pretrained)


def cmd_pretrained(args):
    from keras_deeplab.pretrained.registry import list_pretrained

    rows = list_pretrained()
    if args.json:
        import json

        from keras_deeplab.provenance import jsonable

        print(json.dumps(jsonable(rows), indent=2))
        return 0
    header = ("name", "source", "classes", "source mIoU", "params", "MB", "available")
    table = [(r["name"], r["source"], str(r["num_classes"]), f"{r['source_miou']}",
              "-" if r["num_params"] is None else f"{r['num_params']:,}",
              f"{r['file_size_mb']}", "yes" if r["available"] else "not yet")
             for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    for line in (header, *table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    print("source mIoU: the source's published figure (percent), not measured here, in the "
          "source's setting (--json: eval_setting); params '-': not published.")
    return 0


def _add_convert(sub):
    p = _subparser(sub, "convert", "convert a torchvision or TensorFlow DeepLab checkpoint "
                   "into a .keras model", [
        "keras-deeplab convert --from torchvision deeplabv3_resnet50_coco-cd0a2569.pth "
        "--arch deeplabv3_resnet50 --output deeplabv3_resnet50.keras",
        "keras-deeplab convert --from tf-deeplab deeplabv3_pascal_train_aug_2018_01_04.tar.gz "
        "--arch deeplabv3plus_xception65.tf_voc_trainaug --output xception65_voc.keras",
        "keras-deeplab convert --from tf-deeplab model.ckpt --arch deeplabv3plus_xception65 "
        "--output m.keras",
    ], description="keras_deeplab.pretrained.convert_file: reads the state_dict (torchvision: "
       "needs torch) or the TF1 checkpoint (tf-deeplab: TensorFlow only), checks every "
       "weight's name and shape and writes the model.")
    p.add_argument("--from", dest="source", required=True, choices=["torchvision", "tf-deeplab"],
                   help="framework of the checkpoint")
    p.add_argument("file", help="the checkpoint: torchvision .pth; tf-deeplab: the model-zoo "
                   ".tar.gz, a checkpoint prefix (model.ckpt), its .index file or a directory "
                   "holding it")
    p.add_argument("--arch", required=True, help="architecture or checkpoint name, e.g. "
                   "deeplabv3_resnet50 (keras-deeplab pretrained list)")
    p.add_argument("--output", required=True, help=".keras (model) or .weights.h5 file")
    p.add_argument("--num-classes", type=_opt_int, default="none",
                   help="classes of the file (none: read from its classifier)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args):
    exists = os.path.exists(args.file) or (
        args.source == "tf-deeplab" and os.path.isfile(args.file + ".index"))
    if not exists:
        raise UsageError(f"{args.file} does not exist.")
    from keras_deeplab.pretrained.convert import convert_file

    model = convert_file(args.file, source=args.source, arch=args.arch, output=args.output,
                         num_classes=args.num_classes)
    print(f"Converted {args.file} ({args.arch}, {model.count_params():,} parameters) -> "
          f"{args.output}")
    return 0


# --- entry point -----------------------------------------------------------------------------
def build_parser():
    """The ``keras-deeplab`` parser (built without importing TensorFlow or Keras)."""
    first = __doc__.split("\n\n")[0].replace("\n", " ").replace("``", "")
    epilog = __doc__[__doc__.index("Exit status"):].replace("``", "").replace("::", ":")
    parser = argparse.ArgumentParser(prog="keras-deeplab", description=first,
                                     formatter_class=_HELP, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"keras-deeplab {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure (and framework logs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_export, _add_predict, _add_crf_search,
                _add_pretrained, _add_convert):
        add(sub)
    return parser


def _quiet_frameworks():
    """TensorFlow's C++ and absl start-up logs off (unless set by the user)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def main(argv=None):
    """Runs one command; returns its exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet_frameworks()
    try:
        load_stages(quiet=not args.debug)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # a config error from experiment (message already formatted)
        if args.debug or isinstance(e.code, int) or e.code is None:
            raise
        print(f"keras-deeplab {args.command}: {str(e.code).removeprefix('error: ')}",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (one line for the user; --debug for the trace)
        if args.debug:
            raise
        status = 2 if isinstance(e, (UsageError, FileNotFoundError, NotADirectoryError)) \
            else 1
        message = str(e) or type(e).__name__
        print(f"keras-deeplab {args.command}: error: {message}", file=sys.stderr)
        if status == 1:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
