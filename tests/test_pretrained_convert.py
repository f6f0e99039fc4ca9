"""torchvision checkpoints converted exactly: for every registered ResNet checkpoint,
torchvision's own model (weights=None, aux_loss=True, seeded random weights and BN
statistics) and our converted model give the same logits on the same uint8 photo.

Reference: torchvision 0.28's model code run on torch's CPU build (tests/_torchvision.py).
Marked ``convert`` (needs torch + torchvision: ``make test-convert``); ResNet-101 and the
520 px runs are also ``large``.
"""

import os

import numpy as np
import pytest
from _torchvision import logits_on_backend, randomized_model, torchvision_logits
from PIL import Image

from keras_deeplab.pretrained import CHECKPOINTS, convert_file, read_state_dict
from keras_deeplab.pretrained.registry import get_architecture

pytestmark = pytest.mark.convert

RESNET_ARCHS = ("fcn_resnet50", "deeplabv3_resnet50", "fcn_resnet101", "deeplabv3_resnet101")


def photo(height, width):
    """matplotlib's sample photo (Grace Hopper, 512x600 JPEG) resized with PIL to (H, W)."""
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """arch -> (torchvision model, our converted model), built once per module."""
    cache = {}

    def get(arch):
        if arch not in cache:
            import torch

            reference = randomized_model(arch, seed=0)
            path = os.path.join(tmp_path_factory.mktemp(arch), f"{arch}.pth")
            torch.save(reference.state_dict(), path)
            cache[arch] = (reference, convert_file(path, arch=arch))
        return cache[arch]

    return get


def _check_parity(reference, model, image):
    want = torchvision_logits(reference, image)
    got = model(image[None].astype("float32"), training=False)
    for tv_key, our_key in (("out", "logits"), ("aux", "aux_logits")):
        w, g = want[tv_key], np.asarray(got[our_key])
        assert g.shape == w.shape, (our_key, g.shape, w.shape)
        assert np.abs(w).max() > 0.1  # logits of order one, so the bound below is meaningful
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4, err_msg=our_key)
        agreement = (g.argmax(-1) == w.argmax(-1)).mean()
        assert agreement >= 0.9999, (our_key, agreement)


def _params(arch):
    return [pytest.param(a, marks=pytest.mark.large) if "101" in a else a for a in arch]


@pytest.mark.parametrize("arch", _params(RESNET_ARCHS))
def test_logits_equal_torchvision_at_odd_size(arch, converted):
    reference, model = converted(arch)
    _check_parity(reference, model, photo(97, 131))


@pytest.mark.large
@pytest.mark.parametrize("arch", RESNET_ARCHS)
def test_logits_equal_torchvision_at_520(arch, converted):
    reference, model = converted(arch)
    _check_parity(reference, model, photo(520, 520))


@pytest.mark.parametrize("arch", _params(RESNET_ARCHS))
def test_trainable_parameters_equal_torchvision(arch, converted):
    reference, model = converted(arch)
    want = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    got = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert got == want
    checkpoint = CHECKPOINTS[f"{arch}.torchvision_coco_voc"]
    assert got == checkpoint.source_num_params  # torchvision's published count (with aux)


def test_deeplabv3_resnet50_parameter_count_is_torchvisions_published_one():
    model = get_architecture("deeplabv3_resnet50").build(num_classes=21, aux=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 42_004_074


def test_every_registered_checkpoint_is_covered_by_a_parity_test():
    resnet = {c.arch for c in CHECKPOINTS.values() if "resnet" in c.arch}
    assert resnet == set(RESNET_ARCHS)


# --- bad input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcn50_file(tmp_path_factory):
    import torch

    path = os.path.join(tmp_path_factory.mktemp("fcn50"), "fcn_resnet50.pth")
    torch.save(randomized_model("fcn_resnet50", seed=1).state_dict(), path)
    return path


def test_state_dict_of_another_architecture_lists_every_unmatched_key(fcn50_file):
    with pytest.raises(ValueError) as info:
        convert_file(fcn50_file, arch="deeplabv3_resnet50")
    message = str(info.value)
    assert fcn50_file in message
    # DeepLabHead keys the FCN file lacks, and FCN keys the DeepLab model lacks, both listed
    assert "classifier.0.convs.0.0.weight" in message and "classifier.0.project.1.running_var" in message
    assert "source key(s) the model has no weight for" in message
    assert "shape mismatch" in message and "classifier.4.weight" in message


def test_state_dict_of_another_class_count_names_the_mismatching_keys(fcn50_file):
    with pytest.raises(ValueError, match=r"classifier\.4\.weight: source \(21, 512, 1, 1\)"):
        convert_file(fcn50_file, arch="fcn_resnet50", num_classes=19)


def test_class_count_is_read_from_the_file(fcn50_file):
    state = read_state_dict(fcn50_file)
    model = convert_file(fcn50_file, arch="fcn_resnet50")
    assert model.num_classes == 21 == state["classifier.4.weight"].shape[0]


def test_truncated_and_non_torch_files_raise(tmp_path, fcn50_file):
    truncated = tmp_path / "truncated.pth"
    with open(fcn50_file, "rb") as f:
        truncated.write_bytes(f.read()[: 1 << 20])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        convert_file(str(truncated), arch="fcn_resnet50")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_state_dict(str(text))


def test_unknown_architecture_and_output_suffix_raise(fcn50_file):
    with pytest.raises(ValueError, match="registered: .*deeplabv3_resnet50"):
        convert_file(fcn50_file, arch="pspnet_resnet50")
    with pytest.raises(ValueError, match=r"'\.keras' \(model\) or '\.weights\.h5'"):
        convert_file(fcn50_file, arch="fcn_resnet50", output="model.h5")


def test_converted_keras_file_reloads_with_class_names(tmp_path, fcn50_file):
    import keras

    out = tmp_path / "fcn.keras"
    model = convert_file(fcn50_file, arch="fcn_resnet50.torchvision_coco_voc", output=str(out))
    loaded = keras.saving.load_model(str(out))
    assert loaded.class_names == list(CHECKPOINTS["fcn_resnet50.torchvision_coco_voc"].class_names)
    assert loaded.palette == "voc"
    x = photo(33, 41)[None].astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)["logits"]), np.asarray(model(x)["logits"]))


# --- the converted models downstream: Predictor, TFLite, other backends ------------------


def test_predictor_takes_class_names_and_palette_from_the_converted_model(converted, tmp_path):
    import torch

    from keras_deeplab.data.labels import VOC_CLASSES
    from keras_deeplab.inference import Predictor

    reference, _ = converted("fcn_resnet50")
    path = tmp_path / "fcn50.pth"
    torch.save(reference.state_dict(), path)
    model = convert_file(str(path), arch="fcn_resnet50.torchvision_coco_voc")
    image = photo(97, 131)
    predictor = Predictor(model)
    assert predictor.class_names == list(VOC_CLASSES)
    assert predictor._palette_given == "voc"  # the model's palette, not the default
    result = predictor.predict(image, crf=False)
    want = torchvision_logits(reference, image)["out"][0].argmax(-1)
    assert (result.labels == want).mean() >= 0.9999


@pytest.mark.large
def test_tflite_float32_export_passes_the_parity_gate_and_equals_torchvision(converted, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    import keras_deeplab.export as export

    reference, model = converted("deeplabv3_resnet50")
    path = tmp_path / "deeplabv3_resnet50.tflite"
    sample = np.stack([photo(97, 131), photo(97, 131)[::-1]]).astype("float32")
    info = export.tflite(model, str(path), sample_data=sample, num_parity_images=2,
                         min_argmax_agreement=0.9999, verbose=False)
    assert info["parity"]["max_abs_diff_logits"] <= 1e-4
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(info["ops"]["op_counts"])
    image = photo(97, 131)
    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *image.shape])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    want = torchvision_logits(reference, image)["out"]
    # the main logits are one of the outputs (the aux head is exported too)
    assert min(np.abs(o - want).max() for o in outputs if o.shape == want.shape) <= 1e-4


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_converted_models_give_torchvisions_logits_on_jax_and_torch(backend, converted, tmp_path):
    """The converted `.keras` file loaded under another Keras backend in a subprocess
    (tests/_backend_worker.py) gives torchvision's logits."""
    images = np.stack([photo(97, 131), photo(97, 131)[:, ::-1]])
    reference, model = converted("deeplabv3_resnet50")
    got, want = logits_on_backend(backend, model, reference, images, tmp_path,
                                  "deeplabv3_resnet50")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9999
