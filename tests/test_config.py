"""The typed run configuration (keras_deeplab.training.config): flags built from the
dataclasses, round trips, defaults in --help, errors that name the flag, unsupported model
options that raise, and the config stored in the run manifest."""

import argparse
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from keras_deeplab.training import config as C
from keras_deeplab.training import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_parser(dataset=None):
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return C.add_train_arguments(p, dataset)


def _text(value):
    """Command-line text of a value, written independently of config.format_value."""
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        sep = "x" if all(isinstance(v, int) for v in value) else ","
        return sep.join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _lookup(config, dest):
    section, *path = dest.split(".")
    obj = config if section == "run" else getattr(config, section)
    for name in path:
        obj = getattr(obj, name)
    return obj


def _argv(parser, config):
    """Flags that reproduce ``config`` in ``parser``: every option given explicitly."""
    argv = []
    for action in parser._actions:
        if "." not in (action.dest or ""):
            continue
        value = _lookup(config, action.dest)
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            argv += [] if value else [flag]
        else:
            argv += [flag, _text(value)]
    return argv


def _custom_config():
    return C.RunConfig(
        data=C.DataConfig("voc", "/data/VOCdevkit", train_split="train_aug", crop_size=321,
                          batch_size=6, augment=C.AugmentConfig(min_scale=0.75, max_scale=1.5,
                                                                scale_step=0.25, hue=0.05),
                          augment_on="device"),
        model=C.ModelConfig("deeplabv3", backbone="resnet50", output_stride=8,
                            backbone_weights="none"),
        optim=C.OptimConfig(epochs=3, steps_per_epoch=7, base_lr=0.02, power=1.0,
                            weight_decay=1e-4, loss="ohem", class_weighting="enet",
                            aux_weight=0.4, precision="mixed_bfloat16"),
        eval=C.EvalConfig(sliding_window=(65, 97), scales=(0.5, 1.0, 1.75), flip=True,
                          every=2, batch_size=2, max_batches=3),
        runs_dir="/tmp/runs", run_name="x", seed=5, strategy="mirrored", sync_bn=False,
        overwrite=True, tensorboard=False, verbose=0)


@pytest.mark.parametrize("dataset", [None, "voc"])
def test_round_trip_config_argparse_config(dataset):
    config = _custom_config()
    parser = _train_parser(dataset)
    argv = _argv(parser, config)
    assert ("--dataset" in argv) == (dataset is None)
    back = C.run_config_from_args(parser.parse_args(argv), dataset)
    assert back == config
    # the flags changed what the defaults give (the round trip is not trivially default)
    assert back != C.run_config_from_args(parser.parse_args(
        ["--data-dir", "/data/VOCdevkit"] + ([] if dataset else ["--dataset", "voc"])), dataset)
    # and the manifest form round-trips too, through JSON
    assert C.RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_dataset_defaults_and_synthetic_smoke_settings():
    args = _train_parser().parse_args(["--dataset", "voc", "--data-dir", "d"])
    config = C.run_config_from_args(args)
    # DeepLabv3+ on VOC (Chen et al. 2018): crop 513, batch 16, lr 0.007
    assert (config.data.crop_size, config.data.batch_size, config.optim.base_lr) == (513,
                                                                                     16, 0.007)
    assert config.model == C.ModelConfig("deeplabv3plus", "resnet101", 16, "imagenet")
    assert config.run_dir == os.path.join("saved_models", "deeplabv3plus_resnet101_voc")
    cs = C.run_config_from_args(_train_parser("cityscapes").parse_args(["--synthetic"]),
                                "cityscapes")
    assert (cs.data.crop_size, cs.data.batch_size, cs.eval.every) == (64, 4, 1)
    assert cs.eval.sliding_window == 64  # 769 capped to the 64-pixel fake images
    assert cs.model == C.ModelConfig("deeplabv3plus", "resnet18", 16, "none", tiny=True)
    # a setting given on the command line wins over the dataset's default
    args = _train_parser().parse_args(["--dataset", "cityscapes", "--data-dir", "d",
                                       "--eval-sliding-window", "none", "--base-lr", "0.1"])
    config = C.run_config_from_args(args)
    assert config.eval.sliding_window is None and config.optim.base_lr == 0.1


def _option_help(help_text, option):
    """The help entry of one option (its lines up to the next option), whitespace joined."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option + " ")
                 or line.strip() == option or line.strip().startswith(option + ","))
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-") or not line.startswith(" " * 3):
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())




@pytest.mark.parametrize("which", ["cli-train", "recipe-cityscapes", "recipe-voc", "evaluate"])
def test_every_default_is_shown_in_help(which):
    if which == "evaluate":
        parser = C.add_evaluate_arguments(
            argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    else:
        parser = _train_parser(None if which == "cli-train" else which.split("-")[1])
    text = parser.format_help()
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        entry = _option_help(text, action.option_strings[0])
        assert re.search(r"\(default: [^)]+\)", entry), entry
        checked += 1
    assert checked >= (10 if which == "evaluate" else 40)
    # values from the papers / dataclasses, read off the help text
    if which == "recipe-cityscapes":
        assert "(default: 769)" in _option_help(text, "--crop-size")
        assert "(default: 769)" in _option_help(text, "--eval-sliding-window")
        assert "(default: 0.01)" in _option_help(text, "--base-lr")
    if which == "recipe-voc":
        assert "(default: 513)" in _option_help(text, "--crop-size")
        assert "(default: 0.007)" in _option_help(text, "--base-lr")
        assert "(default: none)" in _option_help(text, "--eval-sliding-window")
    if which == "cli-train":
        assert "cityscapes 769, voc 513" in _option_help(text, "--crop-size")
        assert "(default: 4e-05)" in _option_help(text, "--weight-decay")
        assert "(default: 0.5)" in _option_help(text, "--min-scale")
        assert "(default: 1.0)" in _option_help(text, "--eval-scales")
    if which == "evaluate":
        assert "(default: none)" in _option_help(text, "--sliding-window")
        assert "(default: val)" in _option_help(text, "--split")


@pytest.mark.parametrize("argv, flag", [
    (["--overlap", "1.5"], "--overlap"),
    (["--scales", "0,1"], "--scales"),
    (["--sliding-window", "0x10"], "--sliding-window"),
    (["--max-batches", "-1"], "--max-batches"),
    (["--official"], "--export-dir"),
])
def test_invalid_eval_values_name_the_flag(argv, flag):
    parser = C.add_evaluate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", "m.keras", "--data-dir", "d"] + argv)
    with pytest.raises(ValueError, match=re.escape(flag)):
        C.config_from_args(args, "eval")


@pytest.mark.parametrize("argv, flag", [
    (["--crop-size", "0"], "--crop-size"),
    (["--dataset", "folder"], "--num-classes"),
    (["--dataset", "voc", "--num-classes", "19"], "--num-classes"),
    (["--min-scale", "3", "--max-scale", "2"], "--min-scale"),
    (["--blur-prob", "2"], "--blur-prob"),
    (["--momentum", "1.0"], "--momentum"),
    (["--base-lr", "-0.1"], "--base-lr"),
    (["--warmup-steps", "-3"], "--warmup-steps"),
    (["--aux-head"], "--aux-weight"),
    (["--image-size", "64"], "--image-size"),  # files on disk: no generated images
    (["--synthetic-images", "4"], "--synthetic-images"),
    (["--loss", "lovasz", "--class-weighting", "enet"], "--class-weighting"),
    (["--tiny", "--backbone-weights", "imagenet"], "--backbone-weights"),
    (["--synthetic", "--backbone-weights", "imagenet"], "--backbone-weights"),
    (["--tiny", "--backbone", "vgg16"], "--tiny"),
])
def test_invalid_train_values_name_the_flag(argv, flag):
    args = _train_parser().parse_args(["--data-dir", "d"] + argv)
    with pytest.raises(ValueError, match=re.escape(flag)):
        C.run_config_from_args(args)


@pytest.mark.parametrize("argv", [["--model", "segformer"], ["--loss", "focal"],
                                  ["--output-stride", "4"], ["--precision", "float16"],
                                  ["--backbone", "resnet200"], ["--augment-on", "gpu"]])
def test_invalid_choices_are_refused_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit):
        _train_parser().parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_missing_data_dir_names_the_flag():
    with pytest.raises(ValueError, match="--data-dir"):
        C.DataConfig("cityscapes")
    assert C.DataConfig("cityscapes", synthetic=True).data_dir is None  # written by train


@pytest.mark.parametrize("model, settings, flag", [
    ("unet", {"backbone": "resnet50"}, "--backbone"),
    ("unet", {"output_stride": 8}, "--output-stride"),
    ("pixel", {"backbone_weights": "imagenet"}, "--backbone-weights"),
    ("pixel", {"output_stride": 16}, "--output-stride"),
    ("deeplabv2", {"aux_head": True}, "--aux-head"),
    ("fcn", {"aux_head": True}, "--aux-head"),
])
def test_unsupported_model_options_raise(model, settings, flag):
    with pytest.raises(ValueError, match=f"--model {model} does not support {flag}"):
        C.ModelConfig(model, **settings)
    with pytest.raises(ValueError, match=re.escape(flag)):
        experiment.build_model(model, num_classes=3, tiny=True, **settings)


def test_aux_weight_on_a_model_without_aux_head_raises():
    args = _train_parser().parse_args(["--synthetic", "--model", "deeplabv2",
                                       "--aux-weight", "0.4"])
    with pytest.raises(ValueError, match="--model deeplabv2 does not support --aux-head"):
        C.run_config_from_args(args)
    with pytest.raises(SystemExit, match="--aux-head"):
        experiment.train_command(args)


def test_validation_settings_training_cannot_apply_raise():
    config = C.RunConfig(data=C.DataConfig("synthetic"),
                         eval=C.EvalConfig(output_stride=8, overlap=0.5))
    with pytest.raises(ValueError, match="output_stride"):
        experiment.train(config)


def test_build_model_applies_every_setting():
    """The built model's own config holds what the ModelConfig asked for."""
    model = experiment.build_model("deeplabv3", num_classes=5, backbone="resnet18",
                                   output_stride=8, tiny=True, aux_head=True)
    cfg = model.get_config()
    assert (cfg["num_classes"], cfg["output_stride"], cfg["aux_head"]) == (5, 8, True)
    assert cfg["backbone"] == "resnet18" or cfg["backbone"]["config"]["name"] == "resnet18"
    unet = experiment.build_model("unet", num_classes=4, tiny=True)
    assert type(unet).__name__ == "UNet" and tuple(unet.get_config()["filters"]) == (8, 16, 32)


def test_manifest_stores_the_config(tmp_path):
    from keras_deeplab.training.manifest import read_manifest

    config = C.RunConfig(
        data=C.DataConfig("synthetic", num_classes=3, synthetic=True, synthetic_images=4,
                          image_size=32),
        model=C.ModelConfig("fcn"), optim=C.OptimConfig(epochs=1),
        runs_dir=str(tmp_path), run_name="run", tensorboard=False, verbose=0)
    summary = experiment.train(config)
    manifest = read_manifest(summary["run_dir"])
    assert manifest["status"] == "finished"
    stored = C.RunConfig.from_dict(manifest["config"])
    assert stored == config and stored.model.tiny and stored.model.backbone == "resnet18"
    assert manifest["config"]["data"]["image_size"] == 32
    assert manifest["config"]["optim"]["base_lr"] == 0.01  # the synthetic dataset's default
    # the same config resumes/refuses like before: a changed setting is named
    changed = dataclasses.replace(config, optim=C.OptimConfig(epochs=1, base_lr=0.5),
                                  overwrite=False)
    with pytest.raises(ValueError, match="optim.base_lr"):
        experiment.train(changed)


def test_no_module_imports_the_package_root():
    pattern = re.compile(r"^\s*(import keras_deeplab\s*$|from keras_deeplab import )", re.M)
    for path in ("keras_deeplab/training/config.py", "keras_deeplab/training/experiment.py",
                 "keras_deeplab/cli.py"):
        with open(os.path.join(REPO, path)) as f:
            assert not pattern.search(f.read()), path


def test_model_options_agree_with_the_constructors():
    """MODEL_OPTIONS (what the config lets through) == what each class's __init__ takes."""
    import inspect

    for name, takes in C.MODEL_OPTIONS.items():
        params = set(inspect.signature(experiment._model_class(name).__init__).parameters)
        for option in ("backbone", "output_stride", "backbone_weights", "aux_head"):
            assert (option in takes) == (option in params), (name, option)
        for option, _ in experiment.TINY_MODEL_KWARGS[name].items():
            assert option in params, (name, option)


def test_evaluation_defaults_to_whole_images_on_every_dataset():
    """Per-dataset validation windows belong to training; evaluate/predict default to none."""
    parser = C.add_evaluate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", "m.keras", "--dataset", "cityscapes", "--data-dir", "d"])
    assert C.config_from_args(args, "eval").sliding_window is None
    train = C.run_config_from_args(_train_parser().parse_args(["--data-dir", "d"]))
    assert train.eval.sliding_window == 769  # DeepLab's Cityscapes validation window


# --- --pretrained: fine-tune a published checkpoint ------------------------------------------
LRASPP = "lraspp_mobilenet_v3_large.torchvision_coco_voc"


def _kernels(model, prefix=""):
    """Layer path -> its first weight (kernel) as NumPy, through nested sub-models."""
    out = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.weights:
            out.update(_kernels(layer, f"{prefix}{layer.name}."))
        elif layer.weights:
            out[f"{prefix}{layer.name}"] = layer.weights[0].numpy()
    return out


def test_build_model_fine_tunes_a_pretrained_checkpoint(tmp_path):
    """No torch, no network: the checkpoint's weights come from a .weights.h5 file."""
    from keras_deeplab.pretrained.hub import _build
    from keras_deeplab.pretrained.registry import get_checkpoint

    _, source = _build(get_checkpoint(LRASPP))
    path = str(tmp_path / "x.weights.h5")
    source.save_weights(path)
    model = experiment.build_model(C.ModelConfig(pretrained=LRASPP, pretrained_weights=path),
                                   num_classes=5, class_names=list("abcde"))
    assert model.output_shape[-1] == 5 and model.class_names == list("abcde")
    before, after = _kernels(source), _kernels(model)
    backbone = [k for k in before if k.startswith("backbone.") and before[k].ndim == 4]
    assert backbone
    for name in backbone:
        np.testing.assert_array_equal(after[name], before[name])
    changed = [k for k in before if before[k].shape != after[k].shape]
    assert changed and all(before[k].shape[-1] == 21 and after[k].shape[-1] == 5
                           for k in changed)


@pytest.mark.parametrize("settings, flag", [
    (dict(pretrained=LRASPP, tiny=True), "--tiny"),
    (dict(pretrained=LRASPP, backbone="resnet50"), "--backbone"),
    (dict(pretrained=LRASPP, output_stride=8), "--output-stride"),
    (dict(pretrained="no_such.checkpoint"), "--pretrained"),
    (dict(pretrained_weights="x.weights.h5"), "--pretrained-weights"),
])
def test_pretrained_refusals_name_the_flag(settings, flag):
    with pytest.raises(ValueError, match=re.escape(flag)) as err:
        C.ModelConfig(**settings)
    if settings.get("pretrained") == "no_such.checkpoint":
        assert LRASPP in str(err.value)  # the known names are listed


def test_pretrained_flags_round_trip_through_argparse():
    args = _train_parser().parse_args(["--dataset", "voc", "--data-dir", "d", "--pretrained",
                                       LRASPP, "--pretrained-weights", "w.weights.h5"])
    config = C.run_config_from_args(args)
    assert (config.model.pretrained, config.model.pretrained_weights) == (LRASPP,
                                                                          "w.weights.h5")
    assert config.model.backbone is None and config.run_name == "lraspp_mobilenet_v3_large_voc"
    assert C.RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="--tiny"):  # --synthetic implies --tiny
        C.run_config_from_args(_train_parser().parse_args(["--synthetic", "--pretrained",
                                                           LRASPP]))
