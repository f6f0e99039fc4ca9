"""The same weights give the same logits on TensorFlow, JAX and PyTorch (subprocesses)."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_deeplab as kd

pytestmark = pytest.mark.backends

TINY = {"backbone": "resnet18", "backbone_kwargs": {"base_filters": 8}}
MODELS = {
    "v3plus_os8": lambda: kd.models.DeepLabV3Plus(num_classes=5, output_stride=8, aspp_filters=8, decoder_filters=8, **TINY),
    "v3_multigrid": lambda: kd.models.DeepLabV3(num_classes=4, multi_grid=(1, 2), aspp_filters=8, **TINY),
    "v3plus_mobilenet_separable": lambda: kd.models.DeepLabV3Plus(
        num_classes=3, backbone="mobilenetv2", backbone_kwargs={"alpha": 0.35}, separable=True,
        aspp_filters=8, decoder_filters=8,
    ),
    "v2_largefov": lambda: kd.models.DeepLabV2(num_classes=3, backbone="vgg16", aspp_rates=(12,), fc_filters=8),
    "unet": lambda: kd.models.UNet(num_classes=3, filters=(4, 8, 16)),
}


def _randomize_bn(model, rng):
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.8, 1.2, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.8, 1.25, c)]
            )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_logits_agree_across_backends(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"{backend} is not installed: run `make install-backends` (pip install -e '.[backends]').")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 45, 61, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    worker = os.path.join(os.path.dirname(__file__), "_backend_worker.py")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    paths, expected = [], {}
    for name, make in MODELS.items():
        model = make()
        _randomize_bn(model, rng)
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
        expected[paths[-1]] = model.predict(x, verbose=0)
    proc = subprocess.run(
        [sys.executable, worker, str(tmp_path / "x.npy"), *paths],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-3000:]}"
    for path, want in expected.items():
        got = np.load(f"{path}.{backend}.npy")
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"{path} on {backend}")
