"""The command line as a user meets it (issue 15): one test per problem found, each checked
against an independent reference (NumPy, PIL, the TFLite interpreter, json's strict parser).

Tiny models (narrow ResNet-18 DeepLabv3+) on 32-64 px images, in-process through
`keras_deeplab.cli.main` except where the shell itself is the point (the console script's
start-up, a 25-class model predicted and evaluated from the shell).
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from keras_deeplab import cli
from keras_deeplab.data import palette as kd_palette
from keras_deeplab.training import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "keras-deeplab")


def _strict_json(path):
    """json.load that refuses NaN / Infinity (invalid JSON for most parsers)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def _shell(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet the frameworks itself
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def model25(tmp_path_factory):
    """A tiny untrained 25-class DeepLabv3+, saved, with a 3-image folder dataset
    (``<root>/val/{images,masks}``) and a folder of 2 photos."""
    root = tmp_path_factory.mktemp("model25")
    model = experiment.build_model("deeplabv3plus", num_classes=25, tiny=True)
    path = str(root / "m25.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    for sub in ("data/val/images", "data/val/masks", "photos"):
        (root / sub).mkdir(parents=True)
    images, masks = [], []
    for i in range(3):
        image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        mask = rng.integers(0, 25, (40, 56), dtype=np.uint8)
        mask[:4] = 255  # ignored pixels
        Image.fromarray(image).save(root / "data/val/images" / f"{i}.png")
        Image.fromarray(mask).save(root / "data/val/masks" / f"{i}.png")
        images.append(image)
        masks.append(mask)
    for i in range(2):
        Image.fromarray(images[i]).save(root / "photos" / f"p{i}.png")
    return {"root": root, "path": path, "model": model, "images": images, "masks": masks}


def _argmax(model, image):
    return model.predict(image[None].astype("float32"), verbose=0)[0].argmax(-1)


# --- Found 2 (any class count, legends, palette PNGs) and 5 (evaluation JSON), from the shell
def test_25_class_model_predicted_legended_and_evaluated_from_the_shell(model25):
    root, model = model25["root"], model25["model"]
    out = _shell(["predict", "--model", model25["path"], "--input", "photos", "--output",
                  "pred"], cwd=root)
    assert out.returncode == 0, out.stderr
    assert "I0000" not in out.stderr and "absl" not in out.stderr  # no framework logs
    colours = kd_palette.generated_palette(25)
    for i in range(2):
        png = Image.open(root / "pred" / f"p{i}_labels.png")
        assert png.mode == "P"  # viewable colours ...
        ids = np.asarray(png)  # ... and the class ids as pixel values
        expected = _argmax(model, model25["images"][i])
        assert (ids == expected).mean() > 0.99
        lut = np.asarray(png.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(lut[:25], colours)
        color = np.asarray(Image.open(root / "pred" / f"p{i}_color.png"))
        np.testing.assert_array_equal(color, colours[ids])  # colour PNG = palette of ids
        legend = np.asarray(Image.open(root / "pred" / f"p{i}_legend.png"))
        assert legend.shape[1] == 56 + 220  # the overlay and its side panel
        top = np.bincount(ids.ravel(), minlength=25).argmax()  # most pixels: listed first
        swatch = legend[4 + 4: 4 + 14, 56 + 6: 56 + 14].reshape(-1, 3)
        assert (swatch == colours[top]).all()
    assert np.asarray(Image.open(root / "pred" / "legend.png")).shape[0] >= 25 * 18

    out = _shell(["evaluate", "--model", model25["path"], "--dataset", "folder", "--data-dir",
                  "data", "--num-classes", "25", "--json", "eval.json", "--plot-confusion",
                  "cm.png", "--verbose", "0"], cwd=root)
    assert out.returncode == 0, out.stderr
    record = _strict_json(root / "eval.json")
    # NumPy reference: the confusion matrix of the model's argmax over the valid pixels
    reference = np.zeros((25, 25), np.int64)
    for image, mask in zip(model25["images"], model25["masks"]):
        pred, valid = _argmax(model, image), mask != 255
        reference += np.bincount(mask[valid].astype(np.int64) * 25 + pred[valid],
                                 minlength=625).reshape(25, 25)
    np.testing.assert_array_equal(record["confusion_matrix"], reference)
    inter = np.diag(reference)
    union = reference.sum(0) + reference.sum(1) - inter
    for c in range(25):
        if union[c] == 0:
            assert record["per_class_iou"][c] is None  # absent class: null, not NaN
        else:
            assert record["per_class_iou"][c] == pytest.approx(inter[c] / union[c])
    assert record["model"] == model25["path"] and record["kind"] == "evaluation"
    assert record["eval"]["scales"] == [1.0] and record["eval"]["flip"] is False
    assert record["eval"]["output_stride"] is None and record["data"]["num_classes"] == 25
    assert Image.open(root / "cm.png").size[0] > 100


def test_palettes_for_any_class_count_and_from_files(model25, tmp_path, capsys):
    # generated: VOC colours for the first 21 ids, distinct colours for any count
    big = kd_palette.generated_palette(300)
    np.testing.assert_array_equal(big[:21], kd_palette.VOC_PALETTE)
    assert len({tuple(c) for c in big}) == 300
    assert tuple(kd_palette.IGNORE_COLOR) not in {tuple(c) for c in big}
    # a palette file with class names: colours and names reach the outputs
    lines = [f"{(7 * i) % 256} {(13 * i) % 256} {(29 * i) % 256} thing {i}" for i in range(25)]
    (tmp_path / "pal.txt").write_text("# r g b name\n" + "\n".join(lines) + "\n")
    colours, names = kd_palette.read_palette_file(str(tmp_path / "pal.txt"))
    assert names[3] == "thing 3" and tuple(colours[3]) == (21, 39, 87)
    assert cli.main(["predict", "--model", model25["path"], "--input",
                     str(model25["root"] / "photos" / "p0.png"), "--output",
                     str(tmp_path / "o"), "--palette", str(tmp_path / "pal.txt")]) == 0
    ids = np.asarray(Image.open(tmp_path / "o" / "p0_labels.png"))
    color = np.asarray(Image.open(tmp_path / "o" / "p0_color.png"))
    np.testing.assert_array_equal(color, colours[ids])
    # a named palette too short for the model: status 2, naming the flag and the fix
    assert cli.main(["predict", "--model", model25["path"], "--input",
                     str(model25["root"] / "photos"), "--output", str(tmp_path / "o2"),
                     "--palette", "voc"]) == 2
    err = capsys.readouterr().err
    assert "--palette 'voc' has 21 colours" in err and "generated" in err
    assert "Traceback" not in err
    (tmp_path / "bad.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match="bad.txt: entry 1"):
        kd_palette.read_palette_file(str(tmp_path / "bad.txt"))


def test_one_default_palette_for_tensorboard_and_predict(tmp_path):
    """A VOC-sized model gets VOC colours from the Predictor and the TensorBoard panels, a
    19-class model Cityscapes colours (they differed before); a model's own palette wins."""
    from keras_deeplab.inference.predictor import Predictor
    from keras_deeplab.training.tensorboard_masks import TensorBoardMasks

    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype("float32")
    for classes, expected in ((21, kd_palette.VOC_PALETTE), (19, kd_palette.CITYSCAPES_PALETTE)):
        model = experiment.build_model("pixel", num_classes=classes, tiny=True)
        pred = Predictor(model)
        result = pred.predict(image)
        np.testing.assert_array_equal(result.color(), np.asarray(expected)[result.labels])
        tb = TensorBoardMasks(str(tmp_path), [(image[None], np.zeros((1, 32, 32, 1), "int32"))],
                              max_images=1)
        tb.set_model(model)
        panel = tb.panels()[0]
        np.testing.assert_array_equal(panel[:, 64:], np.asarray(expected)[result.labels])
    model.palette = [(1, 2, 3)] * 19  # a model carrying its own palette
    assert kd_palette.default_palette(19, model) == model.palette


# --- Found 1: int8 TFLite from the shell --------------------------------------------------
def test_export_int8_from_the_shell_with_calibration_images(tmp_path, capsys):
    from keras_deeplab.inference.tflite_runtime import TFLiteRunner

    model = experiment.build_model("deeplabv3plus", num_classes=5, tiny=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    (tmp_path / "calib").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            tmp_path / "calib" / f"{i}.jpg")
    # int8 without calibration data: status 2 and the flag to give, before any work
    assert cli.main(["export", "--model", path, "--format", "tflite", "--quantization", "int8",
                     "--input-size", "32x48", "--output", str(tmp_path / "x.tflite")]) == 2
    assert "--calibration-data" in capsys.readouterr().err
    out = str(tmp_path / "int8.tflite")
    assert cli.main(["export", "--model", path, "--format", "tflite", "--quantization", "int8",
                     "--input-size", "32x48", "--calibration-data", str(tmp_path / "calib"),
                     "--num-parity-images", "2", "--output", out]) == 0
    sidecar = json.load(open(out + ".json"))
    assert sidecar["quantization"] == "int8" and sidecar["calibration_images"] == 3
    # the interpreter runs it: an int8 model (its tensors are quantized)
    runner = TFLiteRunner(out)
    details = runner.interpreter.get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in details)
    # "none" is a value the parser accepts (it was listed but rejected before)
    assert cli.main(["export", "--model", path, "--format", "tflite", "--quantization", "none",
                     "--input-size", "32", "--output", str(tmp_path / "f32.tflite")]) == 0
    assert json.load(open(tmp_path / "f32.tflite.json"))["quantization"] == "float32"
    assert cli.main(["export", "--model", path, "--format", "tflite", "--quantization",
                     "int8", "--input-size", "32", "--calibration-data",
                     str(tmp_path / "nothing"), "--output", str(tmp_path / "y.tflite")]) == 2
    assert "neither a folder nor a dataset" in capsys.readouterr().err


# --- Found 3: crf-search results are saved, judged and used ----------------------------------
def test_crf_search_writes_table_and_verdict_and_predict_uses_it(tmp_path, capsys):
    from keras_deeplab.inference.crf_search import CRFSearchResult, load_crf_params

    model = experiment.build_model("deeplabv3plus", num_classes=19, tiny=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert cli.main(["crf-search", "--model", path, "--dataset", "cityscapes", "--synthetic",
                     "--image-size", "32", "--synthetic-images", "8", "--max-images", "2",
                     "--coarse-only", "--output", str(tmp_path / "crf.json")]) == 0
    out = capsys.readouterr().out
    record = _strict_json(tmp_path / "crf.json")
    rows = list(csv.DictReader(open(tmp_path / "crf.csv")))
    assert len(rows) == 4 * 8 * 4 and out.count("| coarse |") == len(rows)  # printed once
    best = max(rows, key=lambda r: float(r["miou"]))
    assert float(best["miou"]) == pytest.approx(record["best_miou"])
    assert float(best["bilateral_sxy"]) == record["best_params"]["bilateral_sxy"]
    helps = record["best_miou"] > record["baseline_miou"]
    assert record["helps"] is helps
    assert ("CRF does not help this model" in record["verdict"]) is not helps
    assert record["verdict"] in out
    crf, _ = load_crf_params(str(tmp_path / "crf.json"))
    assert crf.bilateral_compat == record["best_params"]["bilateral_compat"]
    assert crf.bilateral_srgb == record["best_params"]["bilateral_srgb"]
    # the verdict of a search whose best setting is worse than no CRF
    worse = CRFSearchResult(0.0053, {"bilateral_compat": 3.0, "bilateral_sxy": 30.0,
                                     "bilateral_srgb": 3.0}, 0.0047, [], {}, 2)
    assert worse.verdict().startswith("CRF does not help this model")
    # predict --crf-params: the labels of a DenseCRF with those parameters
    from keras_deeplab.inference.predictor import Predictor

    image = np.random.default_rng(2).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert cli.main(["predict", "--model", path, "--input", str(tmp_path / "a.png"),
                     "--output", str(tmp_path / "o"), "--crf-params",
                     str(tmp_path / "crf.json")]) == 0
    expected = Predictor(model, crf=crf).predict(image).labels
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "a_labels.png")),
                                  expected)
    (tmp_path / "junk.json").write_text("{}")
    assert cli.main(["predict", "--model", path, "--input", str(tmp_path / "a.png"),
                     "--output", str(tmp_path / "o"), "--crf-params",
                     str(tmp_path / "junk.json")]) != 0
    assert "crf_config" in capsys.readouterr().err


# --- Found 4: --help fast, quiet, complete ----------------------------------------------------
def test_help_builds_without_tensorflow_quietly_with_every_default(tmp_path):
    probe = ("import sys; sys.argv = ['keras-deeplab', '--help']\n"
             "from keras_deeplab import cli\n"
             "parser = cli.build_parser()\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'jax', 'torch')"
             " if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""
    # every subcommand: an example, and a default shown for every optional flag
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {"train", "evaluate", "export", "predict", "crf-search",
                               "pretrained", "convert"}
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert "examples:\n  keras-deeplab " + name in text, name
        for action in sub._actions:
            if action.option_strings and action.dest != "help" and not action.required:
                flag_help = sub._get_formatter()._format_action(action)
                assert "(default:" in " ".join(flag_help.split()), (name, action.dest)
    assert "<data-dir>/<split>/images" in subparsers["train"].format_help()


def test_console_script_help_under_a_second_and_version(tmp_path):
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = _shell(["--help"], cwd=tmp_path, timeout=60)
        times.append(time.perf_counter() - start)
        assert out.returncode == 0 and out.stderr == "" and "usage: keras-deeplab" in out.stdout
    assert statistics.median(times) < 1.0, times
    from keras_deeplab.version import __version__

    out = _shell(["--version"], cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"keras-deeplab {__version__}"


# --- Found 8: exit codes -------------------------------------------------------------------
def test_predict_fails_for_missing_input_or_folder_without_images(model25, tmp_path, capsys):
    assert cli.main(["predict", "--model", model25["path"], "--input",
                     str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert cli.main(["predict", "--model", model25["path"], "--input",
                     str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    assert cli.main(["predict", "--model", model25["path"], "--input",
                     str(tmp_path / "broken"), "--output", str(tmp_path / "o")]) == 1
    assert cli.main(["predict", "--model", str(tmp_path / "missing.keras"), "--input",
                     str(tmp_path / "broken"), "--output", str(tmp_path / "o")]) == 2
    out = _shell(["predict", "--model", model25["path"], "--input", "nope", "--output", "o"],
                 cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("keras-deeplab predict: error:")
    out = _shell(["train", "--bogus"], cwd=tmp_path, timeout=60)  # argparse: status 2
    assert out.returncode == 2


# --- Found 6 and 7: honest --synthetic, reports ---------------------------------------------
def test_synthetic_validates_first(tmp_path, capsys):
    start = time.time()
    with pytest.raises(SystemExit) as e:  # argparse refuses the name, listing the choices
        cli.main(["train", "--synthetic", "--backbone", "resnet1000", "--runs-dir",
                  str(tmp_path)])
    assert e.value.code == 2 and "resnet101" in capsys.readouterr().err
    assert time.time() - start < 10 and os.listdir(tmp_path) == []
    # an invalid combination is refused before any fake tree is written or model built
    assert cli.main(["train", "--synthetic", "--model", "unet", "--output-stride", "8",
                     "--runs-dir", str(tmp_path)]) == 2
    assert "--output-stride" in capsys.readouterr().err and os.listdir(tmp_path) == []


@pytest.mark.large
def test_synthetic_run_named_after_what_it_built_with_reports(tmp_path):
    runs = tmp_path / "runs"
    out = _shell(["train", "--dataset", "voc", "--synthetic", "--epochs", "2", "--runs-dir",
                  str(runs)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    name = "deeplabv3plus_resnet18-tiny_voc-synthetic"
    run = runs / name
    assert os.listdir(runs) == [name]
    assert (run / "fake_data" / "VOCdevkit" / "VOC2012").is_dir()  # inside the run folder
    assert "fake voc tree" in out.stdout and str(run / "fake_data") in out.stdout
    # one compact line per epoch, no per-class IoU on the console
    epoch_lines = [ln for ln in out.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "val mIoU" in epoch_lines[-1]
    assert "val_iou_" not in out.stdout
    history = list(csv.DictReader(open(run / "history.csv")))
    manifest = json.load(open(run / "manifest.json"))
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert float(history[-1]["val_miou"]) == pytest.approx(
        manifest["metrics"]["final"]["val_miou"])
    assert "val_iou_aeroplane" in history[0]
    assert Image.open(run / "training_curve.png").size[0] > 100
    report = (run / "report.md").read_text()
    assert "Status: finished." in report and "Per-class IoU" in report
    assert f"{float(history[-1]['val_miou']):.4f}" in report
    # the trained model carries its classes' names and colours (legends of predict)
    import keras

    from keras_deeplab.data.labels import VOC_CLASSES

    trained = keras.models.load_model(str(run / "best.keras"), compile=False)
    assert trained.class_names == list(VOC_CLASSES) and trained.palette == "voc"
    # evaluate --synthetic reuses the run's fake tree (no new folder)
    out = _shell(["evaluate", "--model", str(run / "best.keras"), "--dataset", "voc",
                  "--synthetic", "--json", "r.json", "--verbose", "0"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "reusing the training run's fake tree" in out.stdout
    assert _strict_json(tmp_path / "r.json")["num_images"] == 2
    # the README command again: fails at once, naming --overwrite, without a traceback
    start = time.time()
    out = _shell(["train", "--dataset", "voc", "--synthetic", "--epochs", "2", "--runs-dir",
                  str(runs)], cwd=tmp_path)
    assert out.returncode == 1 and "--overwrite" in out.stderr
    assert "Traceback" not in out.stderr and time.time() - start < 30


def test_fit_writes_csv_curve_report_and_a_compact_line(tmp_path, capsys):
    """kd.training.fit itself (recipes and the CLI go through it)."""
    import keras

    from keras_deeplab.training.fit import fit
    from keras_deeplab.training.losses import CrossEntropy

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 16, 16, 1)).astype("int32")
    model = experiment.build_model("pixel", num_classes=3, tiny=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=CrossEntropy())
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    fit(model, train, 3, str(tmp_path / "run"), val_data=train, num_classes=3,
        every_n_epochs=2, class_names=["a", "b", "c"], tensorboard=False)
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" - ")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "val mIoU" not in lines[0] and "val mIoU" in lines[1]  # validation every 2
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert history[0]["val_miou"] == "" and history[1]["val_miou"] != ""
    assert {"val_iou_a", "val_iou_b", "val_iou_c"} <= set(history[0])
    from keras_deeplab.training.run_report import read_history_csv

    parsed = read_history_csv(str(tmp_path / "run" / "history.csv"))
    assert parsed["epoch"] == [1, 2, 3] and np.isnan(parsed["val_miou"][0])
    assert (tmp_path / "run" / "training_curve.png").is_file()
    assert "Status: finished" in (tmp_path / "run" / "report.md").read_text()


# --- pretrained models from the shell ------------------------------------------------------
def test_pretrained_list_and_unknown_names(tmp_path, capsys):
    from keras_deeplab.pretrained.registry import list_pretrained

    assert cli.main(["pretrained", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [r["name"] for r in list_pretrained()]
    assert cli.main(["pretrained", "list"]) == 0
    table = capsys.readouterr().out
    assert all(r["name"] in table for r in rows) and "not measured here" in table
    (tmp_path / "a.png").write_bytes(b"")
    assert cli.main(["predict", "--model", "deeplabv3_resnet1000.nowhere", "--input",
                     str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a pretrained checkpoint" in err and rows[0]["name"] in err
    assert cli.main(["convert", "--from", "torchvision", str(tmp_path / "missing.pth"),
                     "--arch", "deeplabv3_resnet50", "--output", str(tmp_path / "m.keras")]) == 2


@pytest.mark.convert  # reads a .pth with torch (make test-convert installs it)
def test_convert_a_torchvision_state_dict_from_the_shell(tmp_path):
    """A state_dict written from a Keras LR-ASPP model in torch's layouts (OIHW convs,
    (C, 1, kh, kw) depthwise, BN running statistics) converts back to the same logits."""
    import keras
    import torch

    from keras_deeplab.pretrained.convert import torch_named_layers
    from keras_deeplab.pretrained.registry import get_architecture

    arch = "lraspp_mobilenet_v3_large"
    source = get_architecture(arch).build(num_classes=4, aux=False)
    rng = np.random.default_rng(0)
    state = {}
    for prefix, layer in torch_named_layers(source).items():
        for variable in layer.weights:  # random weights and BN statistics
            value = rng.normal(0, 0.1, variable.shape).astype("float32")
            if "variance" in variable.path:
                value = np.abs(value) + 0.5
            variable.assign(value)
        if isinstance(layer, keras.layers.BatchNormalization):
            for key, v in (("weight", layer.gamma), ("bias", layer.beta),
                           ("running_mean", layer.moving_mean),
                           ("running_var", layer.moving_variance)):
                state[f"{prefix}.{key}"] = np.asarray(v)
            continue
        kernel = np.asarray(layer.kernel)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            state[f"{prefix}.weight"] = np.transpose(kernel, (2, 3, 0, 1))
        elif isinstance(layer, keras.layers.Conv2D):
            state[f"{prefix}.weight"] = np.transpose(kernel, (3, 2, 0, 1))
        else:
            state[f"{prefix}.weight"] = kernel.T
        if getattr(layer, "bias", None) is not None:
            state[f"{prefix}.bias"] = np.asarray(layer.bias)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
               tmp_path / "lraspp.pth")
    assert cli.main(["convert", "--from", "torchvision", str(tmp_path / "lraspp.pth"), "--arch",
                     arch, "--output", str(tmp_path / "lraspp.keras")]) == 0
    converted = keras.models.load_model(str(tmp_path / "lraspp.keras"))
    image = rng.uniform(0, 255, (1, 64, 80, 3)).astype("float32")
    np.testing.assert_allclose(converted.predict(image, verbose=0),
                               source.predict(image, verbose=0), atol=1e-4, rtol=1e-4)


def test_config_reads_the_stages_declarations_without_importing_them():
    """training/config.py reads these from the defining modules' source (so the parser needs
    no framework); they must equal the imported values."""
    import dataclasses

    from keras_deeplab.backbones import NAMES
    from keras_deeplab.data.augment import AugmentConfig
    from keras_deeplab.training import config
    from keras_deeplab.training.class_weights import METHODS
    from keras_deeplab.training.distribute import STRATEGIES
    from keras_deeplab.training.precision import PRECISIONS

    assert config.STRATEGIES == STRATEGIES and config.PRECISIONS == PRECISIONS
    assert config.CLASS_WEIGHTINGS == METHODS and config.BACKBONES == NAMES
    declared = config._declared("data.augment", "AugmentConfig")
    defaults = dataclasses.asdict(AugmentConfig())
    for name in config.AUGMENT_FLAGS:
        assert declared[name] == defaults[name], name
    assert config.NUM_CLASSES == {"cityscapes": 19, "voc": 21, "synthetic": 6}


def test_history_csv_restarts_with_overwrite_and_drops_repeated_epochs(tmp_path):
    """A run started again (--overwrite) gets a new history.csv; a resumed one keeps the
    rows of the epochs before the one it restarts from."""
    from keras_deeplab.training.run_report import EpochCSVLogger

    path = str(tmp_path / "history.csv")

    def run(epochs, first=0):
        logger = EpochCSVLogger(path, expected_keys=["val_miou"])
        logger.on_train_begin()
        for e in range(first, epochs):
            logger.on_epoch_begin(e)
            logger.on_epoch_end(e, {"loss": float(10 * e + first)})
        logger.on_train_end()

    run(3)
    run(4, first=2)  # resumed at epoch 2: epochs 0, 1 kept, 2 and 3 written again
    rows = list(csv.DictReader(open(path)))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("0", "0.0"), ("1", "10.0"),
                                                       ("2", "22.0"), ("3", "32.0")]
    assert rows[0]["val_miou"] == ""
    run(1)  # started again from epoch 0
    assert [r["epoch"] for r in csv.DictReader(open(path))] == ["0"]
