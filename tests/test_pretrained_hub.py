"""Download, cache and load: `from_pretrained` / `download` through ``file://`` URLs (no
network), a wrong hash, a truncated file, no network, unknown names, fine-tuning heads, and
`list_pretrained` against torchvision's published metadata (copied in the test by hand from
torchvision 0.28's ``*_Weights.COCO_WITH_VOC_LABELS_V1``)."""

import dataclasses
import hashlib
import os

import numpy as np
import pytest

from keras_deeplab.pretrained import (
    CHECKPOINTS,
    download,
    from_pretrained,
    list_pretrained,
)
from keras_deeplab.pretrained import hub as hub_module

# torchvision 0.28 source, by hand: (url, miou, pixel_acc, num_params)
PUBLISHED = {
    "fcn_resnet50": ("https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth", 60.5, 91.4, 35322218),
    "fcn_resnet101": ("https://download.pytorch.org/models/fcn_resnet101_coco-7ecb50ca.pth", 63.7, 91.9, 54314346),
    "deeplabv3_resnet50": ("https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth", 66.4, 92.4, 42004074),
    "deeplabv3_resnet101": ("https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth", 67.4, 92.4, 60996202),
    "deeplabv3_mobilenet_v3_large": ("https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth", 60.3, 91.2, 11029328),
    "lraspp_mobilenet_v3_large": ("https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth", 57.9, 91.2, 3221538),
}


def test_list_pretrained_lists_the_six_checkpoints_with_the_sources_figures():
    rows = {row["name"]: row for row in list_pretrained() if row["source"] == "torchvision"}
    assert set(rows) == {f"{arch}.torchvision_coco_voc" for arch in PUBLISHED}
    for arch, (url, miou, acc, params) in PUBLISHED.items():
        row = rows[f"{arch}.torchvision_coco_voc"]
        assert (row["url"], row["source_miou"], row["source_pixel_acc"], row["num_params"]) == (url, miou, acc, params)
        assert row["licence"] == "BSD-3-Clause" and row["source"] == "torchvision"
        assert row["num_classes"] == 21 and row["classes"][15] == "person"
        # torchvision names the file <arch>...-<first 8 hex digits of the SHA-256>.pth
        assert url.endswith(f"-{CHECKPOINTS[row['name']].sha256_prefix}.pth")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        from_pretrained("deeplabv3_resnet50.torchvision_cityscapes")
    for name in CHECKPOINTS:
        assert name in str(info.value)


def _local_checkpoint(tmp_path, payload, prefix=None, name="deeplabv3_resnet50.torchvision_coco_voc"):
    source = tmp_path / "server" / "weights-file.pth"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    return dataclasses.replace(CHECKPOINTS[name], url=source.as_uri(),
                               sha256_prefix=prefix or digest[:8]), source


def test_download_checks_the_hash_and_deletes_a_wrong_file(tmp_path):
    checkpoint, _ = _local_checkpoint(tmp_path, b"0123456789" * 100, prefix="deadbeef")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        download(checkpoint, cache_dir=str(cache))
    message = str(info.value)
    target = os.path.join(str(cache), hub_module.CACHE_SUBDIR, "weights-file.pth")
    assert "deadbeef" in message and checkpoint.url in message and target in message
    assert not os.path.exists(target)
    good, _ = _local_checkpoint(tmp_path, b"0123456789" * 100)
    path = download(good, cache_dir=str(cache))
    assert path == target and open(path, "rb").read() == b"0123456789" * 100


def test_download_of_a_truncated_file_fails_the_hash_check(tmp_path):
    payload = bytes(range(256)) * 64
    checkpoint, source = _local_checkpoint(tmp_path, payload)
    source.write_bytes(payload[:1000])  # the server now has a truncated copy
    with pytest.raises(ValueError, match="truncated or different file"):
        download(checkpoint, cache_dir=str(tmp_path / "cache"))


def test_no_network_says_what_to_download_and_where(tmp_path):
    checkpoint = dataclasses.replace(CHECKPOINTS["fcn_resnet50.torchvision_coco_voc"],
                                     url=(tmp_path / "missing" / "x.pth").as_uri())
    with pytest.raises(ValueError) as info:
        from_pretrained(checkpoint, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "Could not download" in message and checkpoint.url in message
    assert os.path.join(str(tmp_path / "cache"), hub_module.CACHE_SUBDIR, "x.pth") in message
    assert "weights=" in message


@pytest.mark.convert
def test_from_pretrained_downloads_converts_caches_and_reloads_offline(tmp_path, monkeypatch):
    import torch
    from _torchvision import randomized_model
    from test_pretrained_convert import photo, torchvision_logits

    reference = randomized_model("fcn_resnet50", seed=3)
    pth = tmp_path / "fcn.pth"
    torch.save(reference.state_dict(), pth)
    checkpoint, _ = _local_checkpoint(tmp_path, pth.read_bytes(),
                                      name="fcn_resnet50.torchvision_coco_voc")
    cache = str(tmp_path / "cache")
    model = from_pretrained(checkpoint, cache_dir=cache)
    image = photo(45, 61)
    want = torchvision_logits(reference, image)["out"]
    got = np.asarray(model(image[None].astype("float32"))["logits"])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert model.class_names == list(checkpoint.class_names) and model.palette == "voc"
    assert os.path.isfile(hub_module.converted_path(checkpoint, cache))

    # second load: neither the network nor torch
    offline = dataclasses.replace(checkpoint, url=(tmp_path / "gone.pth").as_uri())

    def no_torch(*args, **kwargs):
        raise AssertionError("read the .pth again")

    monkeypatch.setattr(hub_module, "read_state_dict", no_torch)
    again = from_pretrained(offline, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(again(image[None].astype("float32"))["logits"]), got)


@pytest.mark.convert
def test_from_pretrained_with_a_local_file_and_new_classes_keeps_all_but_the_classifiers(tmp_path):
    import torch
    from _torchvision import randomized_model

    reference = randomized_model("fcn_resnet50", seed=4)
    pth = tmp_path / "fcn_resnet50_coco-local.pth"
    torch.save(reference.state_dict(), pth)
    name = "fcn_resnet50.torchvision_coco_voc"
    model = from_pretrained(name, weights=str(pth), num_classes=19, cache_dir=str(tmp_path / "c"))
    assert model.num_classes == 19 and model.class_names is None
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    # a backbone conv and the head's 3x3 conv keep the file's weights (OIHW -> HWIO) ...
    np.testing.assert_array_equal(model.backbone.get_layer("layer4-2-conv2").kernel.numpy(),
                                  state["backbone.layer4.2.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("classifier-0").kernel.numpy(),
                                  state["classifier.0.weight"].transpose(2, 3, 1, 0))
    # ... the two final classifiers are new, with 19 outputs
    assert model.get_layer("classifier-4").kernel.shape == (1, 1, 512, 19)
    assert model.get_layer("aux_classifier-4").kernel.shape == (1, 1, 256, 19)
    # a user file whose hash is not the published one is not cached under the name
    assert not os.path.exists(hub_module.converted_path(name, str(tmp_path / "c")))
