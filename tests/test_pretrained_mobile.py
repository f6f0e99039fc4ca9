"""torchvision's MobileNetV3-Large segmentation checkpoints converted exactly, and exported.

For ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` (with its auxiliary
head): torchvision's own model (``weights=None``, seeded random weights and BN statistics,
tests/_torchvision.py) is saved as a state_dict, converted with the public
`keras_deeplab.pretrained.convert_file`, and both run on the same uint8 photo at 97x131 and
520x520 (logits and auxiliary logits within 1e-4, argmax agreement >= 99.99 %); trainable
parameter counts equal torchvision's and its published ``num_params``. The converted models
export to TFLite (float32, dynamic input size) through `kd.export.tflite`'s parity gate, and
the LiteRT interpreter's logits equal torchvision's at two sizes.

Reference: torchvision 0.28's model code on torch's CPU build. Marked ``convert`` (needs
torch + torchvision: ``make test-convert``).
"""

import os

import numpy as np
import pytest
from _torchvision import (
    import_torchvision,
    logits_on_backend,
    randomize_,
    randomized_model,
    torchvision_logits,
)
from test_pretrained_convert import photo

import keras_deeplab as kd
from keras_deeplab.pretrained import CHECKPOINTS, assign_state_dict, convert_file

pytestmark = pytest.mark.convert

MOBILE_ARCHS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
AUX = {"lraspp_mobilenet_v3_large": None, "deeplabv3_mobilenet_v3_large": True}


def _damp_projections(features, factor=0.5):
    """Scales the projection BN gamma of every inverted-residual block by ``factor``.

    With `randomized_model`'s He-initialised weights the residual sums grow through fifteen
    blocks and the logits reach ~70, where float32 rounding alone is ~1e-4; damped, the
    logits are of order one (as `randomized_model` does for ResNet's ``bn3``), so 1e-4 is a
    fair bound.
    """
    import torch

    with torch.no_grad():
        for module in features.children():
            if hasattr(module, "block"):
                module.block[-1][1].weight.mul_(factor)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """arch -> (torchvision model, our model converted from its saved state_dict)."""
    cache = {}

    def get(arch):
        if arch not in cache:
            import torch

            reference = randomized_model(arch, seed=0, aux_loss=AUX[arch])
            _damp_projections(reference.backbone)
            path = os.path.join(tmp_path_factory.mktemp(arch), f"{arch}.pth")
            torch.save(reference.state_dict(), path)
            cache[arch] = (reference, convert_file(path, arch=f"{arch}.torchvision_coco_voc"))
        return cache[arch]

    return get


def _outputs(model, image):
    out = model(image[None].astype("float32"), training=False)
    return {k: np.asarray(v) for k, v in (out.items() if isinstance(out, dict) else
                                          [("logits", out)])}


def _assert_close(got, want, name):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.abs(want).max() > 0.1, name  # logits of order one: the bound means something
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=name)
    agreement = (got.argmax(-1) == want.argmax(-1)).mean()
    assert agreement >= 0.9999, (name, agreement)
    assert len(np.unique(want.argmax(-1))) >= 3, name  # not a constant label map


@pytest.mark.parametrize("size", [(97, 131), (520, 520)])
@pytest.mark.parametrize("arch", MOBILE_ARCHS)
def test_logits_equal_torchvision(arch, size, converted):
    reference, model = converted(arch)
    image = photo(*size)
    want = torchvision_logits(reference, image)
    got = _outputs(model, image)
    pairs = [("out", "logits")] + ([("aux", "aux_logits")] if AUX[arch] else [])
    assert sorted(got) == sorted(ours for _, ours in pairs) and sorted(want) == sorted(
        tv for tv, _ in pairs)
    for tv_key, our_key in pairs:
        _assert_close(got[our_key], want[tv_key], f"{arch} {size} {our_key}")


@pytest.mark.parametrize("arch", MOBILE_ARCHS)
def test_trainable_parameters_equal_torchvision(arch, converted):
    reference, model = converted(arch)
    got = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert got == sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert got == CHECKPOINTS[f"{arch}.torchvision_coco_voc"].source_num_params
    assert model.class_names == list(CHECKPOINTS[f"{arch}.torchvision_coco_voc"].class_names)


@pytest.mark.parametrize("output_stride, dilated", [(16, True), (32, False)])
def test_backbone_features_equal_torchvision_mobilenet_v3_large(output_stride, dilated):
    """Every feature key against the matching ``features[i]`` output of torchvision's
    classification MobileNetV3-Large (OS16 = ``dilated=True``, OS32 = ``dilated=False``)."""
    import torch

    tv = import_torchvision()
    reference = tv.models.mobilenet_v3_large(weights=None, dilated=dilated).eval()
    randomize_(reference.features, seed=3)  # as randomized_model does for the segmentation models
    _damp_projections(reference.features)
    backbone = kd.backbones.MobileNetV3LargeBackbone(output_stride=output_stride)
    state = {k: v.numpy() for k, v in reference.features.state_dict().items()}
    # Layers are named after torchvision's paths inside `features` ("-" for "."); every
    # key must be used.
    assign_state_dict(backbone, state, lambda m: {layer.name.replace("-", "."): layer for layer in m.layers
                                                  if layer.weights})
    image = photo(97, 131)
    x = torch.from_numpy(image.astype("float32") / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    want = {}
    with torch.no_grad():
        for i, block in enumerate(reference.features):
            x = block(x)
            want[i] = x.permute(0, 2, 3, 1).numpy()
    got = backbone(image[None].astype("float32"))
    strides = {"C2": 4, "C3": 8, "C4": 16, "C5": output_stride, "low": 8}
    for key, index in {"C2": 3, "C3": 6, "C4": 12, "C5": 16, "low": 4}.items():
        g = np.asarray(got[key])
        assert g.shape[1:3] == (-(-97 // strides[key]), -(-131 // strides[key])), key
        np.testing.assert_allclose(g, want[index], rtol=0, atol=1e-4, err_msg=key)


def _tflite_logits(path, image):
    """The LiteRT interpreter (independent of kd's runner), resized to the image."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *image.shape])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("arch", MOBILE_ARCHS)
def test_tflite_float32_export_passes_the_parity_gate_and_equals_torchvision(
        arch, converted, tmp_path):
    reference, model = converted(arch)
    path = tmp_path / f"{arch}.tflite"
    sample = np.stack([photo(97, 131), photo(97, 131)[::-1]]).astype("float32")
    info = kd.export.tflite(model, str(path), sample_data=sample, num_parity_images=2,
                            min_argmax_agreement=0.9999, verbose=False)
    assert info["parity"]["max_abs_diff_logits"] <= 1e-4
    assert info["dynamic_input_size"]
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(info["ops"]["op_counts"])
    for size in [(97, 131), (64, 48)]:  # global pooling: any input size
        image = photo(*size)
        _assert_close(_tflite_logits(path, image), torchvision_logits(reference, image)["out"],
                      f"{arch} TFLite {size}")


def test_every_mobile_checkpoint_is_covered_and_lraspp_refuses_an_aux_head():
    mobile = {c.arch for c in CHECKPOINTS.values()
              if c.source == "torchvision" and "mobilenet" in c.arch}
    assert mobile == set(MOBILE_ARCHS)
    from keras_deeplab.pretrained.registry import get_architecture

    with pytest.raises(ValueError, match="no auxiliary head"):
        get_architecture("lraspp_mobilenet_v3_large").build(num_classes=21, aux=True)


def test_lraspp_state_dict_into_deeplabv3_lists_unmatched_keys(converted, tmp_path):
    import torch

    reference, _ = converted("lraspp_mobilenet_v3_large")
    path = tmp_path / "lraspp.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(ValueError) as info:
        convert_file(str(path), arch="deeplabv3_mobilenet_v3_large", aux=False)
    message = str(info.value)
    assert "classifier.cbr.0.weight" in message  # LR-ASPP key the DeepLab model lacks
    assert "classifier.0.convs.0.0.weight" in message  # DeepLab key the file lacks


@pytest.mark.parametrize("backend, arch", [
    ("jax", "lraspp_mobilenet_v3_large"), ("jax", "deeplabv3_mobilenet_v3_large"),
    ("torch", "lraspp_mobilenet_v3_large"),
    ("torch", "deeplabv3_mobilenet_v3_large")])
def test_converted_model_gives_torchvisions_logits_on_jax_and_torch(backend, arch, converted,
                                                                   tmp_path):
    """The converted `.keras` file, loaded under another Keras backend in a subprocess
    (tests/_backend_worker.py), gives torchvision's logits. Marked ``convert`` only: CI runs
    ``make test-convert`` after ``make install-backends``."""
    images = np.stack([photo(97, 131), photo(97, 131)[:, ::-1]])
    reference, model = converted(arch)
    got, want = logits_on_backend(backend, model, reference, images, tmp_path, arch)
    _assert_close(got, want, f"{arch} on {backend}")
