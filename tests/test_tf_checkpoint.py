"""TensorFlow DeepLab model-zoo checkpoints: reading, naming, assignment, download, cache, CLI.

The checkpoints are written here with ``tf.raw_ops.SaveV2`` (the TF2 op behind
``tf.compat.v1.train.Saver``'s V2 format), under the ORIGINAL variable names and shapes
(tests/_tf_deeplab_names.py, re-derived from tensorflow/models research/deeplab), with random
values plus the training state a real one holds (``global_step``, ``*/Momentum`` slots, an
``*/ExponentialMovingAverage``), and packed like the model zoo's archives
(``<folder>/model.ckpt.{index,data-00000-of-00001}`` next to ``frozen_inference_graph.pb``).
The reference for "the value landed in the right layer" is the array written to the file.

Until the model zoo architectures are registered (keras_deeplab/models/tf_deeplab.py), the
reader runs on a small Keras model named by the naming rule (registered here as
``_tiny_tf_deeplab``); the per-architecture tests skip with that reason.
"""

import dataclasses
import io
import os
import pathlib
import tarfile

import keras
import numpy as np
import pytest
from _tf_deeplab_names import ARCHITECTURES

from keras_deeplab import cli
from keras_deeplab.data.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES, class_names
from keras_deeplab.data.palette import get_palette
from keras_deeplab.pretrained import (
    CHECKPOINTS,
    convert_file,
    from_pretrained,
    list_pretrained,
    read_tf_checkpoint,
    registry,
    tf_named_layers,
)
from keras_deeplab.pretrained import hub as hub_module
from keras_deeplab.pretrained.convert import assign_state_dict

TINY = "_tiny_tf_deeplab"


# --- writing checkpoints as the original code's Saver would -----------------------------------
def random_variables(spec, seed=0):
    """{name: float32 array} for [(name, shape)]; BN variances positive, like real ones."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec:
        value = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        out[name] = value
    return out


def write_checkpoint(prefix, variables, slots=3):
    """Writes ``variables`` (+ global_step, Momentum slots for the first ``slots`` variables
    and one ExponentialMovingAverage) as a TF V2 checkpoint at ``prefix``."""
    import tensorflow as tf

    extra = {"global_step": np.array(30000, np.int64)}
    for name in list(variables)[:slots]:
        extra[f"{name}/Momentum"] = np.zeros_like(variables[name])
    first = next(iter(variables))
    extra[f"{first}/ExponentialMovingAverage"] = variables[first] * 0.5
    everything = {**variables, **extra}
    names = sorted(everything)
    os.makedirs(os.path.dirname(os.fspath(prefix)) or ".", exist_ok=True)
    tf.raw_ops.SaveV2(prefix=os.fspath(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(everything[n]) for n in names])
    return os.fspath(prefix)


def pack(archive, prefix, folder="deeplabv3_test", stem="model.ckpt", with_checkpoint=True,
         compresslevel=1):
    """A model-zoo-like ``.tar.gz``: ``<folder>/<stem>.index``, ``<folder>/<stem>.data-*`` and
    a dummy ``<folder>/frozen_inference_graph.pb``."""
    archive = os.fspath(archive)
    with tarfile.open(archive, "w:gz", compresslevel=compresslevel) as tar:
        if with_checkpoint:
            base = os.path.dirname(prefix)
            for f in sorted(os.listdir(base)):
                if f.startswith(os.path.basename(prefix) + "."):
                    suffix = f[len(os.path.basename(prefix)):]
                    tar.add(os.path.join(base, f), arcname=f"{folder}/{stem}{suffix}")
        payload = b"not a graph, a stand-in for frozen_inference_graph.pb"
        info = tarfile.TarInfo(f"{folder}/frozen_inference_graph.pb")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return archive


# --- a small model named by the naming rule ---------------------------------------------------
TINY_SPEC = [
    ("xception_65/entry_flow/conv1_1/weights", (3, 3, 3, 4)),
    *[(f"xception_65/entry_flow/conv1_1/BatchNorm/{v}", (4,))
      for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    ("xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/"
     "depthwise_weights", (3, 3, 4, 1)),
    *[(f"xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/"
       f"BatchNorm/{v}", (4,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    ("aspp0/weights", (1, 1, 4, 8)),
    *[(f"aspp0/BatchNorm/{v}", (8,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    ("logits/semantic/weights", (1, 1, 8, 5)),
    ("logits/semantic/biases", (5,)),
]


def build_tiny(num_classes=5, aux=False, class_names=None, palette=None):
    """Backbone sub-model "xception_65" + head, layers named after TF scopes ("/" -> "-")."""
    x_in = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False,
                            name="entry_flow-conv1_1")(x_in)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="entry_flow-conv1_1-BatchNorm")(x)
    name = "entry_flow-block1-unit_1-xception_module-separable_conv1_depthwise"
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}-BatchNorm")(x)
    backbone = keras.Model(x_in, x, name="xception_65")
    images = keras.Input((None, None, 3))
    y = backbone(images)
    y = keras.layers.Conv2D(8, 1, use_bias=False, name="aspp0")(y)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name="aspp0-BatchNorm")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(num_classes, 1, name="logits-semantic")(y)
    model = keras.Model(images, y, name="tiny_tf_deeplab")
    model.class_names = list(class_names) if class_names is not None else None
    model.palette = palette
    return model


@pytest.fixture
def tiny_arch():
    registry.register_architecture(TINY, build=build_tiny, map_keys=tf_named_layers)
    yield TINY
    registry._ARCHITECTURES.pop(TINY, None)


@pytest.fixture
def tiny_ckpt(tmp_path):
    variables = random_variables(TINY_SPEC, seed=1)
    prefix = write_checkpoint(tmp_path / "ckpt" / "model.ckpt", variables)
    return prefix, variables


def check_tiny(model, variables):
    """Every variable of the file is in the layer the naming rule names (by hand here)."""
    bb = model.get_layer("xception_65")
    dw = "entry_flow-block1-unit_1-xception_module-separable_conv1_depthwise"
    s = "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise"
    pairs = [
        (bb.get_layer("entry_flow-conv1_1").kernel, "xception_65/entry_flow/conv1_1/weights"),
        (bb.get_layer("entry_flow-conv1_1-BatchNorm").moving_variance,
         "xception_65/entry_flow/conv1_1/BatchNorm/moving_variance"),
        (bb.get_layer(dw).kernel, f"{s}/depthwise_weights"),
        (bb.get_layer(f"{dw}-BatchNorm").gamma, f"{s}/BatchNorm/gamma"),
        (model.get_layer("aspp0-BatchNorm").moving_mean, "aspp0/BatchNorm/moving_mean"),
        (model.get_layer("aspp0-BatchNorm").beta, "aspp0/BatchNorm/beta"),
        (model.get_layer("logits-semantic").kernel, "logits/semantic/weights"),
        (model.get_layer("logits-semantic").bias, "logits/semantic/biases"),
    ]
    for variable, name in pairs:
        np.testing.assert_array_equal(np.asarray(variable), variables[name], err_msg=name)


# --- naming rule, reading, assignment ----------------------------------------------------------
def test_tf_named_layers_follows_the_naming_rule():
    scopes = set(tf_named_layers(build_tiny()))
    assert scopes == {
        "xception_65/entry_flow/conv1_1", "xception_65/entry_flow/conv1_1/BatchNorm",
        "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise",
        "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/BatchNorm",
        "aspp0", "aspp0/BatchNorm", "logits/semantic"}


def test_every_accepted_path_form_reads_the_same_variables_without_training_state(tiny_ckpt, tmp_path):
    prefix, variables = tiny_ckpt
    sub = tmp_path / "sub" / "deeplab_2018_01_04"
    step_prefix = write_checkpoint(sub / "model.ckpt-30000", variables)
    forms = [prefix, prefix + ".index", prefix + ".data-00000-of-00001", os.path.dirname(prefix),
             pack(tmp_path / "zoo.tar.gz", prefix),
             pack(tmp_path / "step.tar.gz", step_prefix, folder="a/b", stem="model.ckpt-30000")]
    for form in forms:
        got = read_tf_checkpoint(form)
        assert set(got) == set(variables), form  # no global_step, Momentum, EMA
        for name, value in variables.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{form}: {name}")


def test_checkpoint_values_land_in_the_named_layers(tiny_ckpt):
    prefix, variables = tiny_ckpt
    model = build_tiny()
    assign_state_dict(model, read_tf_checkpoint(prefix), tf_named_layers, source=prefix,
                      layout="tf")
    check_tiny(model, variables)


def test_convert_file_infers_the_class_count_and_writes_atomically(tiny_arch, tmp_path):
    variables = random_variables([(n, s[:-1] + (7,) if n.startswith("logits") and len(s) == 4
                                   else (7,) if n == "logits/semantic/biases" else s)
                                  for n, s in TINY_SPEC], seed=2)
    prefix = write_checkpoint(tmp_path / "c" / "model.ckpt", variables)
    out = tmp_path / "out" / "tiny.weights.h5"
    model = convert_file(prefix + ".index", source="tf-deeplab", arch=TINY, output=str(out))
    assert model.output_shape[-1] == 7 == variables["logits/semantic/weights"].shape[-1]
    check_tiny(model, variables)
    again = build_tiny(num_classes=7)
    again.load_weights(str(out))
    check_tiny(again, variables)
    assert [f for f in os.listdir(out.parent)] == ["tiny.weights.h5"]  # no temporary left


# --- bad input -----------------------------------------------------------------------------------
def test_frozen_graph_says_which_file_to_use(tmp_path):
    pb = tmp_path / "frozen_inference_graph.pb"
    pb.write_bytes(b"graph")
    with pytest.raises(ValueError) as info:
        read_tf_checkpoint(str(pb))
    message = str(info.value)
    assert str(pb) in message and "model.ckpt.index" in message and ".tar.gz" in message


def test_archive_without_checkpoint_lists_what_it_holds(tmp_path, tiny_ckpt):
    archive = pack(tmp_path / "graph_only.tar.gz", tiny_ckpt[0], with_checkpoint=False)
    with pytest.raises(ValueError) as info:
        read_tf_checkpoint(archive)
    message = str(info.value)
    assert archive in message and "no checkpoint" in message
    assert "deeplabv3_test/frozen_inference_graph.pb" in message and "model.ckpt.index" in message


def test_truncated_archive_and_truncated_data_file_raise_naming_the_file(tmp_path, tiny_ckpt):
    prefix, _ = tiny_ckpt
    archive = pack(tmp_path / "zoo.tar.gz", prefix)
    data = open(archive, "rb").read()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated download") as info:
        read_tf_checkpoint(str(truncated))
    assert str(truncated) in str(info.value)
    shard = prefix + ".data-00000-of-00001"
    blob = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(blob[: len(blob) // 3])
    with pytest.raises(ValueError, match="not a readable TF checkpoint") as info:
        read_tf_checkpoint(prefix)
    assert prefix in str(info.value)
    not_an_archive = tmp_path / "x.tar.gz"
    not_an_archive.write_bytes(b"hello" * 100)
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        read_tf_checkpoint(str(not_an_archive))
    with pytest.raises(FileNotFoundError):
        read_tf_checkpoint(str(tmp_path / "missing" / "model.ckpt"))


def test_archive_members_cannot_escape_the_temporary_folder(tmp_path, tiny_ckpt):
    prefix, variables = tiny_ckpt
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(os.listdir(os.path.dirname(prefix))):
            tar.add(os.path.join(os.path.dirname(prefix), f), arcname=f"../../escape/{f}")
    got = read_tf_checkpoint(str(archive))
    assert set(got) == set(variables)
    assert not (tmp_path.parent.parent / "escape").exists()
    assert not (tmp_path / "escape").exists()


def test_checkpoint_of_another_architecture_lists_unmatched_variables_on_both_sides(tmp_path):
    other = random_variables([("MobilenetV2/Conv/weights", (3, 3, 3, 32)),
                              ("logits/semantic/weights", (1, 1, 8, 5)),
                              ("logits/semantic/biases", (5,))])
    prefix = write_checkpoint(tmp_path / "o" / "model.ckpt", other)
    with pytest.raises(ValueError) as info:
        assign_state_dict(build_tiny(), read_tf_checkpoint(prefix), tf_named_layers,
                          source=prefix, layout="tf", max_listed=3)
    message = str(info.value)
    assert prefix in message and "another architecture" in message
    assert "MobilenetV2/Conv/weights" in message  # in the file, not in the model
    assert "xception_65/entry_flow/conv1_1/weights" in message  # in the model, not in the file
    assert "... and" in message  # only the first ones listed
    assert "global_step" not in message and "Momentum" not in message


def test_checkpoint_without_logits_is_not_a_segmentation_checkpoint(tiny_arch, tmp_path):
    prefix = write_checkpoint(tmp_path / "b" / "model.ckpt",
                              random_variables(TINY_SPEC[:5]))
    with pytest.raises(ValueError, match="logits/semantic/weights"):
        convert_file(prefix, source="tf-deeplab", arch=TINY)


# --- registry ------------------------------------------------------------------------------------
# research/deeplab/g3doc/model_zoo.md, by hand: file, (miou, pixel acc, OS8 ms+flip miou), MB
MODEL_ZOO = {
    "deeplabv3plus_xception65.tf_voc_trainaug":
        ("deeplabv3_pascal_train_aug_2018_01_04.tar.gz", 82.20, None, 83.58, 439, VOC_CLASSES),
    "deeplabv3plus_xception65.tf_cityscapes_trainfine":
        ("deeplabv3_cityscapes_train_2018_02_06.tar.gz", 78.79, None, 80.42, 439, CITYSCAPES_CLASSES),
    "deeplabv3plus_xception65.tf_ade20k":
        ("deeplabv3_xception_ade20k_train_2018_05_29.tar.gz", 45.65, 82.52, None, 439, ADE20K_CLASSES),
    "deeplabv3_mobilenetv2.tf_voc_trainaug":
        ("deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz", 75.32, None, 77.33, 23, VOC_CLASSES),
    "deeplabv3_mobilenetv2.tf_cityscapes_trainfine":
        ("deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz", 70.71, None, 73.57, 23, CITYSCAPES_CLASSES),
    "deeplabv3plus_mobilenetv2.tf_ade20k":
        ("deeplabv3_mnv2_ade20k_train_2018_12_03.tar.gz", 32.04, 75.41, None, 24.8, ADE20K_CLASSES),
}


def test_list_pretrained_has_the_six_model_zoo_checkpoints_with_the_sources_figures():
    rows = {r["name"]: r for r in list_pretrained() if r["source"] == "tensorflow-deeplab"}
    assert set(rows) == set(MODEL_ZOO)
    for name, (file, miou, acc, best, mb, classes) in MODEL_ZOO.items():
        row = rows[name]
        assert row["url"] == f"http://download.tensorflow.org/models/{file}"
        assert (row["source_miou"], row["source_pixel_acc"], row["file_size_mb"]) == (miou, acc, mb)
        assert row["source_metrics"].get("miou_os8_ms_flip") == best
        assert row["classes"] == tuple(classes) and row["sha256_prefix"] is None
        assert row["licence"] == "Apache-2.0" and row["format"] == "tf-checkpoint-archive"
        assert "model_zoo.md" in row["metrics_url"] and "output stride" in row["eval_setting"]
        if "cityscapes" in name:
            assert "trainIds" in row["notes"] and "train_ids_to_label_ids" in row["notes"]
        palette = CHECKPOINTS[name].palette
        assert len(get_palette(palette, len(classes))[0]) >= len(classes)


def test_ade20k_class_names_and_palette_against_the_sources():
    # SceneParsing objectInfo150 (mmsegmentation ade_classes) and DeepLab's ADE20K colour map,
    # a few entries by hand
    names = class_names("ade20k")
    assert len(names) == 151 and names[0] == "other"
    assert (names[1], names[13], names[21], names[150]) == ("wall", "person", "car", "flag")
    colours, _ = get_palette("ade20k")
    assert colours.shape == (151, 3)
    assert [tuple(colours[i]) for i in (0, 1, 2, 150)] == [
        (0, 0, 0), (120, 120, 120), (180, 120, 120), (92, 0, 255)]


# --- download, cache, from_pretrained -----------------------------------------------------------
def _served(tmp_path, archive, name="deeplabv3_mobilenetv2.tf_voc_trainaug"):
    served = tmp_path / "server" / "deeplabv3_tiny_2018.tar.gz"
    served.parent.mkdir(exist_ok=True)
    served.write_bytes(open(archive, "rb").read())
    return dataclasses.replace(CHECKPOINTS[name], arch=TINY, url=served.as_uri(),
                               class_names=tuple(f"c{i}" for i in range(5))), served


def test_from_pretrained_downloads_converts_caches_and_reloads_offline(tiny_arch, tiny_ckpt,
                                                                       tmp_path, monkeypatch):
    prefix, variables = tiny_ckpt
    checkpoint, _ = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", prefix))
    cache = str(tmp_path / "cache")
    model = from_pretrained(checkpoint, cache_dir=cache)
    check_tiny(model, variables)
    assert model.class_names == list(checkpoint.class_names) and model.palette == "voc"
    assert os.path.isfile(hub_module.converted_path(checkpoint, cache))

    offline = dataclasses.replace(checkpoint, url=(tmp_path / "gone.tar.gz").as_uri())

    def no_read(*args, **kwargs):
        raise AssertionError("read the archive again")

    monkeypatch.setattr(hub_module.tf_checkpoint, "read_tf_checkpoint", no_read)
    check_tiny(from_pretrained(offline, cache_dir=cache), variables)


def test_truncated_download_is_deleted_with_a_clear_error(tiny_arch, tiny_ckpt, tmp_path):
    checkpoint, served = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", tiny_ckpt[0]))
    data = served.read_bytes()
    served.write_bytes(data[: len(data) * 2 // 3])
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError) as info:
        from_pretrained(checkpoint, cache_dir=cache)
    message = str(info.value)
    target = os.path.join(cache, hub_module.CACHE_SUBDIR, served.name)
    assert "truncated" in message and "deleted" in message and checkpoint.url in message
    assert "publishes no hash" in message and not os.path.exists(target)


def test_downloaded_archive_of_another_model_is_not_kept(tiny_arch, tmp_path):
    other = random_variables([("MobilenetV2/Conv/weights", (3, 3, 3, 32))])
    prefix = write_checkpoint(tmp_path / "o" / "model.ckpt", other)
    checkpoint, served = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", prefix))
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match="MobilenetV2/Conv/weights"):
        from_pretrained(checkpoint, cache_dir=cache)
    assert not os.path.exists(os.path.join(cache, hub_module.CACHE_SUBDIR, served.name))


def test_weights_argument_accepts_archive_prefix_index_and_keras_weights(tiny_arch, tiny_ckpt,
                                                                         tmp_path):
    prefix, variables = tiny_ckpt
    checkpoint, _ = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", prefix))
    cache = str(tmp_path / "cache")
    for weights in (str(tmp_path / "zoo.tar.gz"), prefix, prefix + ".index"):
        check_tiny(from_pretrained(checkpoint, weights=weights, cache_dir=cache), variables)
    # a user's file is not cached under the name: no hash tells it is the published one
    assert not os.path.exists(hub_module.converted_path(checkpoint, cache))
    h5 = str(tmp_path / "tiny.weights.h5")
    convert_file(prefix, source="tf-deeplab", arch=TINY, output=h5)
    check_tiny(from_pretrained(checkpoint, weights=h5, cache_dir=cache), variables)


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_convert_round_trip_and_pretrained_list(tiny_arch, tiny_ckpt, tmp_path, capsys):
    prefix, variables = tiny_ckpt
    out = tmp_path / "m.keras"
    assert cli.main(["convert", "--from", "tf-deeplab", prefix, "--arch", TINY,
                     "--output", str(out)]) == 0
    loaded = keras.models.load_model(str(out))
    check_tiny(loaded, variables)
    image = np.random.default_rng(0).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    original = build_tiny()
    assign_state_dict(original, read_tf_checkpoint(prefix), tf_named_layers, layout="tf")
    np.testing.assert_allclose(np.asarray(loaded(image)), np.asarray(original(image)), atol=1e-6)
    capsys.readouterr()
    assert cli.main(["pretrained", "list"]) == 0
    table = capsys.readouterr().out
    for name in MODEL_ZOO:
        assert name in table
    assert cli.main(["convert", "--from", "tf-deeplab", str(tmp_path / "nothing.ckpt"), "--arch",
                     TINY, "--output", str(tmp_path / "x.keras")]) != 0


# --- the model-zoo architectures (once registered) ----------------------------------------------
def _find_layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def _require(arch):
    if arch not in registry.architectures():
        pytest.skip(f"architecture {arch!r} not registered yet (keras_deeplab/models/tf_deeplab.py)")


@pytest.fixture(scope="module")
def zoo_checkpoint(tmp_path_factory):
    """arch -> (prefix, variables): one checkpoint of the original names per architecture,
    written once per module (Xception-65's is ~165 MB of random floats)."""
    cache = {}

    def get(arch, num_classes):
        key = (arch, num_classes)
        if key not in cache:
            variables = random_variables(ARCHITECTURES[arch](num_classes), seed=len(cache))
            prefix = write_checkpoint(tmp_path_factory.mktemp(arch) / "model.ckpt", variables)
            cache[key] = (prefix, variables)
        return cache[key]

    return get


# (arch, checkpoint to take classes from, [(keras layer name, attribute, TF variable)]):
# the layers by the naming rule (Xception-65 and heads) or keras.applications' names (the
# MobileNetV2 backbone), written by hand
SPOT_CHECKS = {
    "deeplabv3plus_xception65": [
        ("entry_flow-conv1_1", "kernel", "xception_65/entry_flow/conv1_1/weights"),
        ("middle_flow-block1-unit_9-xception_module-separable_conv2_depthwise-BatchNorm",
         "moving_variance", "xception_65/middle_flow/block1/unit_9/xception_module/"
         "separable_conv2_depthwise/BatchNorm/moving_variance"),
        ("exit_flow-block1-unit_1-xception_module-shortcut", "kernel",
         "xception_65/exit_flow/block1/unit_1/xception_module/shortcut/weights"),
        ("exit_flow-block2-unit_1-xception_module-separable_conv3_pointwise", "kernel",
         "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/weights"),
        ("aspp2_depthwise", "kernel", "aspp2_depthwise/depthwise_weights"),
        ("image_pooling-BatchNorm", "gamma", "image_pooling/BatchNorm/gamma"),
        ("concat_projection", "kernel", "concat_projection/weights"),
        ("decoder-feature_projection0", "kernel", "decoder/feature_projection0/weights"),
        ("decoder-decoder_conv1_pointwise-BatchNorm", "beta",
         "decoder/decoder_conv1_pointwise/BatchNorm/beta"),
        ("logits-semantic", "bias", "logits/semantic/biases"),
    ],
    "deeplabv3_mobilenetv2": [
        ("Conv1", "kernel", "MobilenetV2/Conv/weights"),
        ("expanded_conv_depthwise", "kernel", "MobilenetV2/expanded_conv/depthwise/depthwise_weights"),
        ("block_2_depthwise_BN", "moving_mean", "MobilenetV2/expanded_conv_2/depthwise/BatchNorm/moving_mean"),
        ("block_16_project", "kernel", "MobilenetV2/expanded_conv_16/project/weights"),
        ("aspp0", "kernel", "aspp0/weights"),
        ("logits-semantic", "kernel", "logits/semantic/weights"),
    ],
    "deeplabv3plus_mobilenetv2": [
        ("block_13_expand", "kernel", "MobilenetV2/expanded_conv_13/expand/weights"),
        ("decoder-feature_projection0", "kernel", "decoder/feature_projection0/weights"),
        ("decoder-decoder_conv0_depthwise", "kernel", "decoder/decoder_conv0_depthwise/depthwise_weights"),
        ("logits-semantic", "bias", "logits/semantic/biases"),
    ],
}
CLASSES = {"deeplabv3plus_xception65": 21, "deeplabv3_mobilenetv2": 19,
           "deeplabv3plus_mobilenetv2": 151}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_original_checkpoint_loads_every_variable_into_the_right_layer(arch, zoo_checkpoint):
    _require(arch)
    prefix, variables = zoo_checkpoint(arch, CLASSES[arch])
    # convert_file raises unless every variable is consumed and every model weight found
    model = convert_file(prefix, source="tf-deeplab", arch=arch)
    assert model.output_shape[-1] == CLASSES[arch]
    for layer_name, attribute, tf_name in SPOT_CHECKS[arch]:
        layer = _find_layer(model, layer_name)
        assert layer is not None, f"{arch}: no layer {layer_name!r}"
        np.testing.assert_array_equal(np.asarray(getattr(layer, attribute)), variables[tf_name],
                                      err_msg=f"{arch}: {tf_name} -> {layer_name}.{attribute}")


def test_mobilenet_checkpoint_into_xception_lists_both_sides(zoo_checkpoint):
    _require("deeplabv3plus_xception65")
    _require("deeplabv3_mobilenetv2")
    prefix, _ = zoo_checkpoint("deeplabv3_mobilenetv2", CLASSES["deeplabv3_mobilenetv2"])
    with pytest.raises(ValueError) as info:
        convert_file(prefix, source="tf-deeplab", arch="deeplabv3plus_xception65")
    message = str(info.value)
    assert "MobilenetV2/" in message and "xception_65/" in message and "... and" in message


def test_mobilenet_ade20k_archive_through_from_pretrained(zoo_checkpoint, tmp_path):
    arch = "deeplabv3plus_mobilenetv2"
    _require(arch)
    prefix, variables = zoo_checkpoint(arch, 151)
    archive = pack(tmp_path / "deeplabv3_mnv2_ade20k_train_2018_12_03.tar.gz", prefix,
                   folder="deeplabv3_mnv2_ade20k_train_2018_12_03")
    name = "deeplabv3plus_mobilenetv2.tf_ade20k"
    checkpoint = dataclasses.replace(CHECKPOINTS[name], url=pathlib.Path(archive).as_uri())
    model = from_pretrained(checkpoint, cache_dir=str(tmp_path / "cache"))
    assert model.class_names == list(ADE20K_CLASSES) and model.palette == "ade20k"
    np.testing.assert_array_equal(
        np.asarray(_find_layer(model, "logits-semantic").kernel), variables["logits/semantic/weights"])


def test_xception65_backbone_takes_exactly_the_original_backbone_variables():
    """Xception65Backbone (sub-model "xception_65") against xception_65's variable list: every
    name and shape of the original backbone has its layer, and no layer is left over."""
    from _tf_deeplab_names import xception_65

    from keras_deeplab.backbones.xception import Xception65Backbone

    images = keras.Input((None, None, 3))
    backbone = Xception65Backbone(output_stride=16)
    wrapper = keras.Model(images, backbone(images)["C5"])
    spec = xception_65()
    variables = {name: np.zeros(shape, np.float32) for name, shape in spec}
    marked = spec[-1][0]  # the last variable: exit_flow/block2 ... separable_conv3_pointwise BN
    variables[marked] = np.full(spec[-1][1], 3.0, np.float32)
    assign_state_dict(wrapper, variables, tf_named_layers, layout="tf", max_listed=20)
    layer = backbone.get_layer("exit_flow-block2-unit_1-xception_module-separable_conv3_pointwise"
                               "-BatchNorm")
    assert marked.endswith("separable_conv3_pointwise/BatchNorm/moving_variance")
    np.testing.assert_array_equal(np.asarray(layer.moving_variance), variables[marked])


# --- class count and architecture in the errors (review of issue 12) -----------------------------
def test_checkpoint_name_with_another_class_count_is_refused_naming_the_fitting_one(
        zoo_checkpoint, tmp_path):
    arch = "deeplabv3_mobilenetv2"
    _require(arch)
    prefix, _ = zoo_checkpoint(arch, 21)  # a VOC-sized file
    out = tmp_path / "x.keras"
    with pytest.raises(ValueError) as info:
        convert_file(prefix, source="tf-deeplab", arch=f"{arch}.tf_cityscapes_trainfine",
                     output=str(out))
    message = str(info.value)
    assert prefix in message and "21 classes" in message and "19" in message
    assert f"{arch}.tf_voc_trainaug" in message and "bare architecture name" in message
    assert not out.exists()
    # the CLI: a non-zero exit and no model written
    assert cli.main(["convert", "--from", "tf-deeplab", prefix, "--arch",
                     f"{arch}.tf_cityscapes_trainfine", "--output", str(out)]) != 0
    assert not out.exists()
    # the bare architecture converts it (class count read from the file)
    assert convert_file(prefix, source="tf-deeplab", arch=arch).output_shape[-1] == 21


@pytest.mark.convert
def test_torchvision_checkpoint_name_with_another_class_count_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "fcn_5_classes.pth")
    # the class count is read from the final classifier conv before anything is built
    torch.save({"classifier.4.weight": torch.zeros(5, 512, 1, 1),
                "classifier.4.bias": torch.zeros(5)}, path)
    with pytest.raises(ValueError) as info:
        convert_file(path, arch="fcn_resnet50.torchvision_coco_voc")
    message = str(info.value)
    assert path in message and "5 classes" in message and "21" in message
    assert "no registered checkpoint of fcn_resnet50 has 5 classes" in message


def test_from_pretrained_with_another_class_count_says_both_counts(zoo_checkpoint, tmp_path):
    arch = "deeplabv3_mobilenetv2"
    _require(arch)
    prefix, _ = zoo_checkpoint(arch, 19)  # a Cityscapes-sized file for the VOC name
    name = f"{arch}.tf_voc_trainaug"
    with pytest.raises(ValueError) as info:
        from_pretrained(name, weights=prefix, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    lines = message.splitlines()
    assert prefix in lines[0] and name in lines[0]
    assert lines[1].startswith(f"The file has 19 classes, {name} has 21")
    assert f"{arch}.tf_cityscapes_trainfine" in lines[1]
    # the full list follows, without a transform arrow (TF layout = Keras layout)
    assert "logits/semantic/weights: source (1, 1, 256, 19), model" in message
    assert "->" not in message


def test_file_of_another_architecture_names_its_top_scope(zoo_checkpoint, tiny_arch):
    _require("deeplabv3plus_mobilenetv2")
    for arch, classes in (("deeplabv3_mobilenetv2", 21), ("deeplabv3plus_mobilenetv2", 151)):
        prefix, _ = zoo_checkpoint(arch, classes)
        with pytest.raises(ValueError) as info:
            assign_state_dict(build_tiny(), read_tf_checkpoint(prefix), tf_named_layers,
                              source=prefix, layout="tf", max_listed=3, arch=TINY)
        lines = str(info.value).splitlines()
        assert lines[1].startswith(f"The file's variables are under 'MobilenetV2/': a {arch} "
                                   "checkpoint"), lines[1]
        assert any(c.startswith(f"{arch}.tf_") for c in CHECKPOINTS if c in lines[1])
        assert "MobilenetV2/Conv/BatchNorm/beta" in str(info.value)  # the lists follow


def test_guess_architecture_by_top_scope_and_decoder():
    from keras_deeplab.pretrained.tf_checkpoint import guess_architecture

    xception = [n for n, _ in ARCHITECTURES["deeplabv3plus_xception65"](21)]
    assert guess_architecture(xception) == ("xception_65", ["deeplabv3plus_xception65"])
    mnv2 = [n for n, _ in ARCHITECTURES["deeplabv3_mobilenetv2"](21)]
    assert guess_architecture(mnv2) == ("MobilenetV2", ["deeplabv3_mobilenetv2"])
    assert guess_architecture(["resnet_v1_101/conv1/weights"]) == ("resnet_v1_101", [])
    assert guess_architecture(["global_step"]) == (None, [])


# --- download folders and origin -----------------------------------------------------------------
def test_failed_download_leaves_no_empty_cache_folders(tmp_path):
    cache = tmp_path / "fresh_cache"
    with pytest.raises(ValueError, match="Could not download file:///nonexistent/x.tar.gz"):
        hub_module.download("deeplabv3_mobilenetv2.tf_voc_trainaug", cache_dir=str(cache),
                            origin="file:///nonexistent/x.tar.gz")
    assert not cache.exists()
    # folders that were there before (holding something) stay
    kept = tmp_path / "used_cache" / "keras_deeplab"
    kept.mkdir(parents=True)
    (kept / "other.txt").write_text("x")
    with pytest.raises(ValueError):
        hub_module.download("deeplabv3_mobilenetv2.tf_voc_trainaug", cache_dir=str(kept.parent),
                            origin="file:///nonexistent/x.tar.gz")
    assert sorted(os.listdir(kept)) == ["other.txt"]


def test_from_pretrained_downloads_from_origin(tiny_arch, tiny_ckpt, tmp_path):
    prefix, variables = tiny_ckpt
    checkpoint, served = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", prefix))
    unreachable = dataclasses.replace(checkpoint, url=(tmp_path / "gone.tar.gz").as_uri())
    cache = str(tmp_path / "cache")
    model = from_pretrained(unreachable, cache_dir=cache, origin=served.as_uri())
    check_tiny(model, variables)
    assert os.path.isfile(os.path.join(cache, hub_module.CACHE_SUBDIR, unreachable.filename))
    assert os.path.isfile(hub_module.converted_path(unreachable, cache))


def test_truncated_download_into_a_fresh_cache_leaves_no_folders(tiny_arch, tiny_ckpt, tmp_path):
    checkpoint, served = _served(tmp_path, pack(tmp_path / "zoo.tar.gz", tiny_ckpt[0]))
    data = served.read_bytes()
    served.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "fresh_cache"
    with pytest.raises(ValueError, match="truncated"):
        hub_module.download(checkpoint, cache_dir=str(cache))
    assert not cache.exists()
