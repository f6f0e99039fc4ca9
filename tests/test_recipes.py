"""Recipes and CLI end to end on fake trees in the real on-disk layouts (tiny models).

Their flags come from keras_deeplab.training.config (tests/test_config.py checks the flags
themselves); here every subcommand and recipe runs, and the run manifests hold the config.
"""

import json
import os
import subprocess
import sys

import pytest

from keras_deeplab.data.fake_trees import write_fake_cityscapes
from keras_deeplab.training.config import RunConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def test_evaluate_recipe_synthetic(tmp_path):
    out = _run([os.path.join(REPO, "recipes", "evaluate.py"), "--synthetic", "--verbose", "0",
                "--data-dir", str(tmp_path / "cs"), "--json", str(tmp_path / "r.json")],
               cwd=tmp_path)
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["num_images"] == 2
    # our mIoU of the model == cityscapesscripts on the labelId PNGs it exported
    assert results["cityscapes_official_miou"] == pytest.approx(results["mean_iou"], abs=1e-12)
    assert os.path.isfile(tmp_path / "cs" / "gtFine" / "val" / "aachen" /
                          "aachen_000000_000019_gtFine_labelIds.png")
    del out


def _check_run(run_dir, epochs=2):
    manifest = json.loads(open(os.path.join(run_dir, "manifest.json")).read())
    assert manifest["status"] == "finished" and manifest["epochs"] == epochs
    final = manifest["metrics"]["final"]
    assert 0.0 <= final["val_miou"] <= 1.0 and final["loss"] > 0
    config = manifest["config"]
    assert config["data"]["crop_size"] == 64 and config["model"]["tiny"] is True
    assert config["optim"]["epochs"] == epochs and config["data"]["synthetic"] is True
    RunConfig.from_dict(config)  # the stored config is a valid RunConfig
    assert os.path.isfile(os.path.join(run_dir, "best.keras"))
    return manifest


@pytest.mark.large
def test_train_cityscapes_recipe_synthetic_two_epochs(tmp_path):
    data = tmp_path / "cityscapes"
    _run([os.path.join(REPO, "recipes", "train_cityscapes.py"), "--synthetic", "--epochs", "2",
          "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--run-name", "cs",
          "--verbose", "0"], cwd=tmp_path)
    config = _check_run(str(tmp_path / "runs" / "cs"))["config"]
    # DeepLab's Cityscapes recipe (Chen et al. 2018)
    assert config["optim"]["base_lr"] == 0.01 and config["model"]["output_stride"] == 16
    assert config["optim"]["weight_decay"] == 4e-5 and config["data"]["augment"]["max_scale"] == 2.0
    assert config["eval"]["sliding_window"] == 64  # 769 capped to the fake images
    # evaluate the trained model on the fake tree at OS8 + official Cityscapes scoring
    _run([os.path.join(REPO, "recipes", "evaluate.py"), "--model",
          str(tmp_path / "runs" / "cs" / "best.keras"), "--dataset", "cityscapes", "--data-dir",
          str(data), "--output-stride", "8", "--export-dir", str(tmp_path / "pred"),
          "--official", "--json", str(tmp_path / "r.json"), "--verbose", "0"], cwd=tmp_path)
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["cityscapes_official_miou"] == pytest.approx(results["mean_iou"], abs=1e-12)


@pytest.mark.large
def test_train_voc_recipe_synthetic_two_epochs(tmp_path):
    _run([os.path.join(REPO, "recipes", "train_voc.py"), "--synthetic", "--epochs", "2",
          "--data-dir", str(tmp_path / "voc"), "--runs-dir", str(tmp_path / "runs"),
          "--run-name", "voc", "--verbose", "0",
          # the augmentation flags, on the accelerator path (the train step)
          "--augment-on", "device", "--scale-step", "0.25", "--max-rotation", "10",
          "--brightness", "0.1", "--hue", "0.05", "--blur-prob", "0.5"], cwd=tmp_path)
    config = _check_run(str(tmp_path / "runs" / "voc"))["config"]
    assert config["optim"]["base_lr"] == 0.007 and config["data"]["dataset"] == "voc"
    assert config["data"]["augment_on"] == "device"
    assert config["data"]["augment"]["max_rotation"] == 10
    assert config["data"]["augment"]["scale_step"] == 0.25
    assert os.path.isfile(tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" /
                          "Segmentation" / "train.txt")


@pytest.mark.large
def test_cli_train_then_evaluate(tmp_path):
    _run(["-m", "keras_deeplab.cli", "train", "--dataset", "cityscapes", "--synthetic",
          "--epochs", "2", "--data-dir", str(tmp_path / "cs"), "--runs-dir",
          str(tmp_path / "runs"), "--run-name", "cli", "--verbose", "0"], cwd=tmp_path)
    _check_run(str(tmp_path / "runs" / "cli"))
    _run(["-m", "keras_deeplab.cli", "evaluate", "--model",
          str(tmp_path / "runs" / "cli" / "best.keras"), "--dataset", "cityscapes",
          "--data-dir", str(tmp_path / "cs"), "--sliding-window", "48", "--flip",
          "--json", str(tmp_path / "r.json"), "--verbose", "0"], cwd=tmp_path)
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results["per_class_iou"]) == 19 and 0 <= results["mean_iou"] <= 1


def test_cli_evaluate_in_process(tmp_path, capsys):
    from keras_deeplab import cli
    from keras_deeplab.training import experiment

    data = write_fake_cityscapes(str(tmp_path / "cs"), {"val": 2}, image_size=32)
    model = experiment.build_model(num_classes=19, tiny=True)
    model.save(str(tmp_path / "m.keras"))
    assert cli.main(["evaluate", "--model", str(tmp_path / "m.keras"), "--dataset",
                     "cityscapes", "--data-dir", data, "--scales", "0.75,1.0", "--flip",
                     "--export-dir", str(tmp_path / "pred"), "--official",
                     "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["cityscapes_official_miou"] == pytest.approx(results["mean_iou"], abs=1e-12)
    assert "mean IoU" in capsys.readouterr().out
    # user mistakes: exit status 2 and one line naming the flag, no traceback
    assert cli.main(["train", "--dataset", "cityscapes"]) == 2  # no --data-dir, no --synthetic
    assert "--data-dir" in capsys.readouterr().err
    assert cli.main(["train", "--synthetic", "--model", "unet", "--backbone", "resnet50"]) == 2
    assert "--model unet does not support --backbone" in capsys.readouterr().err
    # VOC has no labelId export: the command fails (status 1), naming the flag
    assert cli.main(["evaluate", "--model", str(tmp_path / "m.keras"), "--dataset", "voc",
                     "--data-dir", data, "--export-dir", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--export-dir" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="--export-dir"):  # --debug: the exception itself
        cli.main(["--debug", "evaluate", "--model", str(tmp_path / "m.keras"), "--dataset",
                  "voc", "--data-dir", data, "--export-dir", str(tmp_path / "x")])


@pytest.mark.parametrize("name, cls", [("deeplabv3plus", "DeepLabV3Plus"),
                                       ("deeplabv3", "DeepLabV3"), ("deeplabv2", "DeepLabV2"),
                                       ("fcn", "FCN"), ("unet", "UNet"),
                                       ("pixel", "PixelClassifier")])
def test_build_model_names(name, cls):
    import numpy as np

    from keras_deeplab.training import experiment
    from keras_deeplab.training.config import MODEL_OPTIONS

    settings = {"backbone": "resnet18"} if "backbone" in MODEL_OPTIONS[name] else {}
    model = experiment.build_model(name, num_classes=3, tiny=True, **settings)
    assert type(model).__name__ == cls and model.get_config()["num_classes"] == 3
    logits = model.predict(np.zeros((1, 33, 47, 3), "float32"), verbose=0)
    assert logits.shape == (1, 33, 47, 3)
    with pytest.raises(ValueError, match="--model"):
        experiment.build_model("segformer")


@pytest.mark.large
def test_cli_hooks_export_predict_crf_search(tmp_path, capsys):
    """The export / predict / crf-search subcommands reach keras_deeplab.export/.inference."""
    import numpy as np
    from PIL import Image

    from keras_deeplab import cli
    from keras_deeplab.training import experiment

    model = experiment.build_model(num_classes=19, tiny=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    (tmp_path / "imgs").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "imgs" / "a.png")
    assert cli.main(["predict", "--model", path, "--input", str(tmp_path / "imgs"),
                     "--output", str(tmp_path / "out")]) == 0
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    expected = model.predict(image[None].astype("float32"), verbose=0)[0].argmax(-1)
    assert (labels == expected).mean() > 0.99
    # --flip reaches the Predictor: NumPy reference = mean softmax of the image and of its
    # mirror (mirrored back), as DeepLab's predict_labels_multi_scale
    assert cli.main(["predict", "--model", path, "--input", str(tmp_path / "imgs"),
                     "--output", str(tmp_path / "out_flip"), "--flip"]) == 0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    views = model.predict(np.stack([image, image[:, ::-1]]).astype("float32"), verbose=0)
    flipped = (softmax(views[0]) + softmax(views[1])[:, ::-1]).argmax(-1)
    labels = np.asarray(Image.open(tmp_path / "out_flip" / "a_labels.png"))
    assert (labels == flipped).mean() > 0.99 and (flipped != expected).any()
    assert cli.main(["export", "--model", path, "--format", "saved_model",
                     "--output", str(tmp_path / "sm")]) == 0
    assert os.path.isfile(tmp_path / "sm" / "saved_model.pb")
    data = write_fake_cityscapes(str(tmp_path / "cs"), {"val": 2}, image_size=32)
    assert cli.main(["crf-search", "--model", path, "--dataset", "cityscapes", "--data-dir",
                     data, "--max-images", "2", "--output", str(tmp_path / "crf.json")]) == 0
    assert "coarse" in capsys.readouterr().out
