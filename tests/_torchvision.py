"""Imports torchvision's (pure Python) model code against the CPU torch wheel, and builds
its segmentation models with random weights and BN statistics for parity tests.

torchvision 0.28's compiled extension (``torchvision._C``, custom ops such as nms) does not
load against torch 2.13's CPU build: ``torchvision/extension.py`` swallows the load error, but
``torchvision/_meta_registrations.py`` then registers meta kernels for ops that do not exist
and raises ``RuntimeError: operator torchvision::nms does not exist`` at ``import
torchvision``. The segmentation models use no custom op, so that one submodule is
pre-registered as an empty module before the import (tried: stubbing it alone makes the
import and the models work; ``torchvision.extension`` itself imports fine). Missing torch
or torchvision fails the test (``pytest.importorskip`` is not used: CI installs them with
``make test-convert``).
"""

import sys
import types

#: Submodules replaced by empty modules before ``import torchvision`` (see above).
STUBBED = ("torchvision._meta_registrations",)


def import_torchvision():
    """``torchvision``, imported with `STUBBED` pre-registered (no-op once imported)."""
    if "torchvision" not in sys.modules:
        for name in STUBBED:
            sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


def torchvision_builder(arch):
    """torchvision's builder function for an architecture name ("deeplabv3_resnet50")."""
    segmentation = import_torchvision().models.segmentation
    return getattr(segmentation, arch)


def randomized_model(arch, seed=0, num_classes=21, aux_loss=True):
    """torchvision's ``arch`` with ``weights=None``, every parameter and BN statistic drawn
    from a seeded generator, in eval mode.

    Conv weights ~ N(0, 2 / fan_in) (He), the last BN gamma of each ResNet unit and its
    shortcut scaled by 0.2 so activations stay O(1) through 101 layers; BN gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1),
    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2), so the BN folding is exercised
    with non-trivial statistics; biases ~ N(0, 0.1).
    """
    import torch

    torch.manual_seed(seed)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if aux_loss is not None:
        kwargs["aux_loss"] = aux_loss
    model = torchvision_builder(arch)(**kwargs)
    randomize_(model, seed)
    with torch.no_grad():
        # Residual sums grow with depth; a small last gamma per unit keeps features O(1)
        # (as zero_init_residual does in training), so 1e-4 is a fair float32 bound.
        for name, module in model.named_modules():
            if name.endswith(".bn3") or name.endswith("downsample.1"):
                module.weight.mul_(0.2)
    return model.eval()


def randomize_(module, seed):
    """Overwrites, in place, every Conv2d and BatchNorm2d under ``module`` from a generator
    seeded with ``seed``: conv weights ~ N(0, 2 / fan_in), biases ~ N(0, 0.1), BN gamma ~
    U(0.5, 1.5), beta ~ N(0, 0.1), running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                n = layer.num_features
                layer.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            elif isinstance(layer, torch.nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator)
                                   * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)


def torchvision_logits(model, image_uint8):
    """torchvision's own preprocessing (``SemanticSegmentation`` without the resize:
    ``convert_image_dtype`` to [0, 1] then ImageNet mean / std) and forward pass.

    Args:
        model: a torchvision segmentation model in eval mode.
        image_uint8: np.ndarray (H, W, 3) uint8 RGB.

    Returns:
        dict name -> np.ndarray (1, H, W, C) float32, NHWC (``"out"``, ``"aux"``).
    """
    import numpy as np
    import torch

    tv = import_torchvision()
    from torchvision.transforms import functional as F

    del tv
    x = torch.from_numpy(np.array(image_uint8, dtype=np.uint8)).permute(2, 0, 1)
    x = F.convert_image_dtype(x, torch.float)
    x = F.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    with torch.no_grad():
        out = model(x[None])
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def logits_on_backend(backend, model, reference, images, tmp_path, name):
    """Saves ``model`` as ``<tmp_path>/<name>.keras``, loads it under the Keras ``backend``
    ("jax" or "torch") in a subprocess (tests/_backend_worker.py) and returns
    ``(logits there, torchvision's logits of reference)`` on the uint8 ``images``
    (N, H, W, 3). Fails (does not skip) when the backend is not installed."""
    import importlib.util
    import os
    import subprocess
    import sys

    import numpy as np
    import pytest

    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"{backend} is not installed: run `make install-backends` "
                    "(pip install -e '.[backends]').")
    np.save(tmp_path / "x.npy", images.astype("float32"))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    want = np.concatenate([torchvision_logits(reference, image)["out"] for image in images])
    worker = os.path.join(os.path.dirname(__file__), "_backend_worker.py")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, worker, str(tmp_path / "x.npy"), path], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-3000:]}"
    return np.load(f"{path}.{backend}.npy"), want
