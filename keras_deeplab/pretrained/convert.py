"""Source state_dict -> our model: read a ``.pth``, map keys to layers, check, assign.

Reading needs torch (the ``convert`` extra); assigning works on NumPy arrays, so a state_dict
already in memory as ``{key: np.ndarray}`` converts without torch.
"""

import os

import keras
import numpy as np

from keras_deeplab.pretrained.registry import get_architecture, get_checkpoint

#: state_dict entries that hold no weights of the model (BN's update counter).
IGNORED_SUFFIXES = (".num_batches_tracked",)


def read_state_dict(path):
    """Reads a torch checkpoint into ``{key: float32/int np.ndarray}``.

    Accepts a plain state_dict or a dict wrapping one under ``"model"`` / ``"state_dict"``
    (torchvision's reference training scripts save ``{"model": ..., "optimizer": ...}``).
    Loaded with ``weights_only=True`` (no code in the file runs).

    Raises:
        ImportError: torch is not installed (``pip install keras_deeplab[convert]``).
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, not a torch file, or holds no state_dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading {path!r} (a PyTorch checkpoint) needs torch: pip install "
            "'keras_deeplab[convert]' (CPU wheel is enough). Running a converted model does not "
            "need torch.") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise ValueError(
            f"{path!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}). "
            "A truncated download or a file of another format gives this; download it again "
            "(the registry's URL: kd.models.list_pretrained()).") from err
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "numpy") for v in obj.values()):
        raise ValueError(f"{path!r} holds no state_dict (a dict of tensors); got {type(obj).__name__}.")
    return {k: v.detach().cpu().numpy() for k, v in obj.items()}


def torch_named_layers(model):
    """``{torch module prefix: layer}`` for a model whose layers are named after torch modules.

    Every layer that owns weights (not a nested model) is keyed by its name; a layer of a
    nested functional model is keyed ``"<sub-model name>.<layer name>"`` (recursively).
    A "-" in a name stands for "." (``"classifier-cbr-0"`` -> ``"classifier.cbr.0"``): on the
    PyTorch backend Keras turns variable paths into torch parameter names, which must not
    contain ".".
    """
    mapping = {}

    def walk(m, prefix):
        for layer in m.layers:
            name = layer.name.replace("-", ".")
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{name}.")
            elif layer.weights:
                mapping[f"{prefix}{name}"] = layer

    walk(model, "")
    return mapping


def _expected(prefix, layer):
    """[(torch key, keras variable, transform)] for one layer, by layer type."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = [(f"{prefix}.weight", layer.kernel, lambda w: np.transpose(w, (2, 3, 0, 1)))]
    elif isinstance(layer, keras.layers.Conv2D):
        out = [(f"{prefix}.weight", layer.kernel, lambda w: np.transpose(w, (2, 3, 1, 0)))]
    elif isinstance(layer, keras.layers.Dense):
        out = [(f"{prefix}.weight", layer.kernel, lambda w: np.transpose(w))]
    elif isinstance(layer, keras.layers.BatchNormalization):
        pairs = [("weight", layer.gamma), ("bias", layer.beta),
                 ("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)]
        return [(f"{prefix}.{k}", v, None) for k, v in pairs if v is not None]
    else:
        raise TypeError(f"No torch mapping for layer {layer.name!r} of type {type(layer).__name__}.")
    if getattr(layer, "bias", None) is not None:
        out.append((f"{prefix}.bias", layer.bias, None))
    return out


def assign_state_dict(model, state_dict, map_keys, source="state_dict"):
    """Assigns a source state_dict to ``model`` through ``map_keys(model)``.

    Every variable of every mapped layer must find its key, every key (except
    ``num_batches_tracked``) must be used, and every shape must match after the layout
    transform (OIHW -> HWIO for convs); nothing is assigned unless all of that holds.

    Args:
        model: keras.Model to fill.
        state_dict: dict ``{key: np.ndarray}`` (from `read_state_dict`).
        map_keys: callable ``model -> {torch prefix: layer}``.
        source: str. Named in error messages (the file path).

    Raises:
        ValueError: unmatched keys (all listed, on both sides) or mismatched shapes (the
            first ones named, with both shapes): a state_dict of another architecture or
            class count.
    """
    keys = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
    plan, missing, shape_errors = [], [], []
    for prefix, layer in map_keys(model).items():
        for key, variable, transform in _expected(prefix, layer):
            if key not in state_dict:
                missing.append(f"{key} (for {variable.path}, shape {tuple(variable.shape)})")
                continue
            keys.discard(key)
            value = np.asarray(state_dict[key])
            if value.ndim != len(variable.shape):
                shape_errors.append(f"{key}: source {value.shape}, model {variable.path} "
                                    f"{tuple(variable.shape)}")
                continue
            value = transform(value) if transform is not None else value
            if tuple(value.shape) != tuple(variable.shape):
                shape_errors.append(f"{key}: source {tuple(np.shape(state_dict[key]))} -> "
                                    f"{tuple(value.shape)}, model {variable.path} "
                                    f"{tuple(variable.shape)}")
                continue
            plan.append((variable, value))
    unused = sorted(keys)
    if missing or unused or shape_errors:
        lines = [f"{source} does not fit {model.name} ({type(model).__name__}): a state_dict of "
                 "another architecture, class count or auxiliary-head setting?"]
        if shape_errors:
            lines.append(f"{len(shape_errors)} shape mismatch(es), first ones:")
            lines += [f"  {s}" for s in shape_errors[:10]]
        if missing:
            lines.append(f"{len(missing)} model weight(s) with no key in the source:")
            lines += [f"  {s}" for s in missing]
        if unused:
            lines.append(f"{len(unused)} source key(s) the model has no weight for:")
            lines += [f"  {s}" for s in unused]
        raise ValueError("\n".join(lines))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return model


def _output_kind(output):
    if output.endswith(".weights.h5"):
        return "weights"
    if output.endswith(".keras"):
        return "keras"
    raise ValueError(f"output={output!r}: give a '.keras' (model) or '.weights.h5' (weights) path.")


def convert_file(path, source="torchvision", arch=None, output=None, num_classes=None, aux=None,
                 class_names=None, palette=None):
    """Converts a source checkpoint file into our model (and writes it when ``output`` is set).

    Args:
        path: str. The ``.pth`` file (a torchvision state_dict).
        source: str. Only "torchvision". Defaults to "torchvision".
        arch: str. A registered architecture ("deeplabv3_resnet50", ...) or a checkpoint
            name ("deeplabv3_resnet50.torchvision_coco_voc", whose class names, palette and
            auxiliary-head setting are then used). Required.
        output: str or None. ``*.keras`` (whole model) or ``*.weights.h5``. Defaults to None
            (nothing written).
        num_classes: int or None. Classes of the file; None reads it from the file's final
            classifier (``classifier.*`` weight with the fewest output channels), which for
            a checkpoint name is its class count.
        aux: bool or None. Whether the file has an auxiliary head; None: inferred from
            ``aux_classifier.*`` keys.
        class_names, palette: stored in the model (defaults: the checkpoint's, for a
            checkpoint name; otherwise None).

    Returns:
        The converted keras model.

    Raises:
        ValueError: unknown source / arch, a file that does not fit the architecture (all
            unmatched keys listed), an unreadable or truncated file.
        ImportError: torch missing.

    Example:
    >>> model = convert_file("deeplabv3_resnet50_coco-cd0a2569.pth", arch="deeplabv3_resnet50",
    ...                      output="deeplabv3_resnet50.keras")
    """
    if source != "torchvision":
        raise ValueError(f"source={source!r}: only 'torchvision' checkpoints convert.")
    if arch is None:
        raise ValueError("arch is required (e.g. arch='deeplabv3_resnet50'); registered: see "
                         "keras_deeplab.pretrained.registry.architectures().")
    if output is not None:
        _output_kind(output)
    checkpoint = None
    if "." in arch:
        checkpoint = get_checkpoint(arch)
        arch = checkpoint.arch
        class_names = class_names if class_names is not None else checkpoint.class_names
        palette = palette if palette is not None else checkpoint.palette
    architecture = get_architecture(arch)
    state_dict = read_state_dict(path)
    if aux is None:
        aux = any(k.startswith("aux_classifier.") for k in state_dict)
    if num_classes is None:
        num_classes = infer_num_classes(state_dict, path)
    model = architecture.build(num_classes=num_classes, aux=aux, class_names=class_names,
                               palette=palette)
    assign_state_dict(model, state_dict, architecture.map_keys, source=os.fspath(path))
    if output is not None:
        if os.path.dirname(output):
            os.makedirs(os.path.dirname(output), exist_ok=True)
        if _output_kind(output) == "weights":
            model.save_weights(output)
        else:
            model.save(output)
    return model


def infer_num_classes(state_dict, source="state_dict"):
    """Class count of a torchvision segmentation state_dict: output channels of the last
    ``classifier.*`` conv weight (4-D) in key order."""
    convs = [k for k, v in state_dict.items()
             if k.startswith("classifier.") and k.endswith(".weight") and np.ndim(v) == 4]
    if not convs:
        raise ValueError(f"{source}: no 'classifier.*' conv weights; not a torchvision "
                         "segmentation state_dict.")
    return int(np.shape(state_dict[convs[-1]])[0])
