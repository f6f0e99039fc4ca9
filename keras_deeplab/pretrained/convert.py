"""Source weights -> our model: read a ``.pth`` or a TF checkpoint, map keys to layers,
check, assign.

Reading a ``.pth`` needs torch (the ``convert`` extra); a TensorFlow DeepLab checkpoint needs
TensorFlow only (`keras_deeplab.pretrained.tf_checkpoint`). Assigning works on NumPy arrays,
so weights already in memory as ``{key: np.ndarray}`` convert without either.
"""

import os

import keras
import numpy as np

from keras_deeplab.pretrained import tf_checkpoint
from keras_deeplab.pretrained.registry import CHECKPOINTS, get_architecture, get_checkpoint
from keras_deeplab.provenance import atomic_path

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
    return tf_checkpoint.named_layers(model, ".")


def _expected_torch(prefix, layer):
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


def _expected_tf(scope, layer):
    """[(TF variable name, keras variable, None)] for one layer, by layer type (TF1/slim
    names; Keras layout = TF layout, so nothing is transposed)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = [(f"{scope}/depthwise_weights", layer.kernel, None)]
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        out = [(f"{scope}/weights", layer.kernel, None)]
    elif isinstance(layer, keras.layers.BatchNormalization):
        pairs = [("gamma", layer.gamma), ("beta", layer.beta),
                 ("moving_mean", layer.moving_mean), ("moving_variance", layer.moving_variance)]
        return [(f"{scope}/{k}", v, None) for k, v in pairs if v is not None]
    else:
        raise TypeError(f"No TF checkpoint mapping for layer {layer.name!r} of type "
                        f"{type(layer).__name__}.")
    if getattr(layer, "bias", None) is not None:
        out.append((f"{scope}/biases", layer.bias, None))
    return out


#: Per-layer-type expectation of each source layout: ``(prefix, layer) -> [(key, variable,
#: transform)]``, the keys ignored in the source, and how error messages call things.
_LAYOUTS = {
    "torch": {"expected": _expected_torch, "ignored": lambda k: k.endswith(IGNORED_SUFFIXES),
              "logits": lambda k: k.startswith(("classifier.", "aux_classifier.")),
              "num_classes": lambda sd, source: infer_num_classes(sd, source),
              "what": "state_dict", "keys": "key(s)",
              "hint": "a state_dict of another architecture, class count or auxiliary-head "
                      "setting?"},
    "tf": {"expected": _expected_tf, "ignored": lambda k: False,
           "logits": lambda k: k.startswith("logits/"),
           "num_classes": lambda sd, source: tf_checkpoint.infer_num_classes(sd, source),
           "what": "checkpoint", "keys": "variable(s)",
           "hint": "a checkpoint of another architecture (or model variant) or class count?"},
}


def checkpoints_of(arch, num_classes=None):
    """Names of the registered checkpoints of architecture ``arch`` (with ``num_classes``
    classes, unless None)."""
    return [c.name for c in CHECKPOINTS.values()
            if c.arch == arch and (num_classes is None or c.num_classes == num_classes)]


def _checkpoint_hint(arch, num_classes):
    if arch is None:
        return ""
    names = checkpoints_of(arch, num_classes)
    if names:
        return f" (registered checkpoint(s) of {arch} with {num_classes} classes: " \
               f"{', '.join(names)})"
    return f" (no registered checkpoint of {arch} has {num_classes} classes)"


def _class_count_line(source, state_dict, layout, target, model_classes, arch, only):
    try:
        file_classes = _LAYOUTS[layout]["num_classes"](state_dict, source)
    except ValueError:
        return None
    line = (f"The file has {file_classes} classes, {target} has {model_classes}"
            f"{_checkpoint_hint(arch, file_classes)}")
    if not only:  # other variables differ too: the architecture line follows
        return line + "."
    return line + ("; or pass the bare architecture name (the class count is read from the "
                   "file) and your own class names.")


def _top_scope_line(state_dict):
    scope, archs = tf_checkpoint.guess_architecture(state_dict)
    if scope is None:
        return None
    if not archs:
        return (f"The file's variables are mostly under {scope + '/'!r}, the top scope of no "
                "registered TF DeepLab architecture.")
    names = [c for a in archs for c in checkpoints_of(a)]
    registered = f" (registered: {', '.join(names)})" if names else ""
    return (f"The file's variables are under {scope + '/'!r}: a {' or '.join(archs)} "
            f"checkpoint{registered}.")


def assign_state_dict(model, state_dict, map_keys, source="state_dict", layout="torch",
                      max_listed=None, arch=None, target=None):
    """Assigns a source state_dict (or TF checkpoint) to ``model`` through ``map_keys(model)``.

    Every variable of every mapped layer must find its key, every key (except the layout's
    ignored ones) must be used, and every shape must match after the layout transform;
    nothing is assigned unless all of that holds. One matching / reporting logic for every
    source; what a layer expects depends on ``layout``:

    - ``"torch"``: ``<prefix>.weight`` / ``.bias`` / ``.running_mean`` / ``.running_var``
      (OIHW -> HWIO for convs, (C, 1, kh, kw) -> (kh, kw, C, 1) for depthwise, (out, in) ->
      (in, out) for Dense); ``num_batches_tracked`` ignored.
    - ``"tf"``: TF1/slim names ``<scope>/weights`` [+ ``<scope>/biases``],
      ``<scope>/depthwise_weights``, ``<scope>/{gamma,beta,moving_mean,moving_variance}``
      (a BN layer's scope is ``<conv scope>/BatchNorm``), no transposes
      (`keras_deeplab.pretrained.tf_checkpoint`).

    Args:
        model: keras.Model to fill.
        state_dict: dict ``{key: np.ndarray}`` (from `read_state_dict` or
            `keras_deeplab.pretrained.tf_checkpoint.read_tf_checkpoint`).
        map_keys: callable ``model -> {source prefix / scope: layer}``.
        source: str. Named in error messages (the file path).
        layout: "torch" or "tf". Defaults to "torch".
        max_listed: int or None. List at most this many unmatched keys per side (None: all).
        arch: str or None. The registered architecture of ``model``: the error then names
            the registered checkpoints of the file's class count. Defaults to None.
        target: str or None. What the model is called in errors (a checkpoint name).
            Defaults to ``model.name``.

    Raises:
        ValueError: unmatched keys (listed on both sides) or mismatched shapes (the first
            ones named, with both shapes): a file of another architecture or class count.
            When only the logits' shapes differ, the message first says "The file has N
            classes, <target> has M" and names the registered checkpoints of ``arch`` with
            N classes; when most of a TF checkpoint's variables are unmatched, it says which
            registered architecture's top scope they are under
            (`tf_checkpoint.guess_architecture`). The full lists follow.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout={layout!r}: use one of {sorted(_LAYOUTS)}.")
    spec = _LAYOUTS[layout]
    keys = {k for k in state_dict if not spec["ignored"](k)}
    n_keys = len(keys)
    plan, missing, shape_errors, logits_classes = [], [], [], []
    for prefix, layer in map_keys(model).items():
        for key, variable, transform in spec["expected"](prefix, layer):
            if key not in state_dict:
                missing.append(f"{key} (for {variable.path}, shape {tuple(variable.shape)})")
                continue
            keys.discard(key)
            value = np.asarray(state_dict[key])
            if value.ndim != len(variable.shape):
                shape_errors.append(f"{key}: source {value.shape}, model {variable.path} "
                                    f"{tuple(variable.shape)}")
                logits_classes.append(None)
                continue
            value = transform(value) if transform is not None else value
            if tuple(value.shape) != tuple(variable.shape):
                arrow = "" if transform is None else f" -> {tuple(value.shape)}"
                shape_errors.append(f"{key}: source {tuple(np.shape(state_dict[key]))}{arrow}, "
                                    f"model {variable.path} {tuple(variable.shape)}")
                # a logits conv's kernel / bias: the model's class count is its last dimension
                logits_classes.append(variable.shape[-1] if spec["logits"](key) else None)
                continue
            plan.append((variable, value))
    unused = sorted(keys)
    if missing or unused or shape_errors:
        def listed(items):
            shown = items if max_listed is None else items[:max_listed]
            more = len(items) - len(shown)
            return [f"  {s}" for s in shown] + ([f"  ... and {more} more"] if more else [])

        what, noun = spec["what"], spec["keys"]
        target = target or model.name
        lines = [f"{source} does not fit {target} ({type(model).__name__}): {spec['hint']}"]
        if shape_errors and None not in logits_classes:  # only the logits' shapes differ
            lines.append(_class_count_line(source, state_dict, layout, target,
                                           logits_classes[0], arch, not (missing or unused)))
        if layout == "tf" and (missing or unused):
            _, guessed = tf_checkpoint.guess_architecture(state_dict)
            if len(unused) > n_keys / 2 or (arch is not None and guessed and arch not in guessed):
                lines.append(_top_scope_line(state_dict))
        lines = [line for line in lines if line]
        if shape_errors:
            lines.append(f"{len(shape_errors)} shape mismatch(es), first ones:")
            lines += [f"  {s}" for s in shape_errors[:10]]
        if missing:
            lines.append(f"{len(missing)} model weight(s) with no {noun[:-3]} in the {what}:")
            lines += listed(missing)
        if unused:
            lines.append(f"{len(unused)} source {noun} the model has no weight for:")
            lines += listed(unused)
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


#: ``convert_file`` sources: name -> assign layout.
SOURCES = {"torchvision": "torch", "tf-deeplab": "tf"}


def read_source(path, source):
    """Reads a source file into ``{key: np.ndarray}``: ``"torchvision"`` -> `read_state_dict`
    (needs torch), ``"tf-deeplab"`` -> `tf_checkpoint.read_tf_checkpoint` (TensorFlow only)."""
    if source == "tf-deeplab":
        return tf_checkpoint.read_tf_checkpoint(path)
    return read_state_dict(path)


def convert_file(path, source="torchvision", arch=None, output=None, num_classes=None, aux=None,
                 class_names=None, palette=None):
    """Converts a source checkpoint file into our model (and writes it when ``output`` is set).

    Args:
        path: str. ``source="torchvision"``: the ``.pth`` file (a torchvision state_dict).
            ``source="tf-deeplab"``: a TensorFlow DeepLab model-zoo checkpoint: the
            ``.tar.gz`` archive, a checkpoint prefix (``model.ckpt``), its ``.index`` file or
            a directory holding it (`tf_checkpoint.read_tf_checkpoint`).
        source: str. "torchvision" or "tf-deeplab". Defaults to "torchvision".
        arch: str. A registered architecture ("deeplabv3_resnet50",
            "deeplabv3plus_xception65", ...) or a checkpoint name
            ("deeplabv3_resnet50.torchvision_coco_voc", whose class names, palette and
            auxiliary-head setting are then used). Required.
        output: str or None. ``*.keras`` (whole model) or ``*.weights.h5``, written
            atomically. Defaults to None (nothing written).
        num_classes: int or None. Classes of the file; None reads it from the file (torch:
            the final classifier, ``classifier.*`` weight with the fewest output channels;
            TF: the last dimension of ``logits/semantic/weights``).
        aux: bool or None. Whether the file has an auxiliary head; None: inferred from
            ``aux_classifier.*`` keys (always False for TF DeepLab checkpoints).
        class_names, palette: stored in the model (defaults: the checkpoint's, for a
            checkpoint name; otherwise None).

    Returns:
        The converted keras model.

    Raises:
        ValueError: unknown source / arch; a checkpoint name whose class count is not the
            file's (names the registered checkpoints of the file's class count); a file that
            does not fit the architecture (unmatched keys listed on both sides); an
            unreadable or truncated file; a frozen graph ``.pb`` given for a TF checkpoint.
        ImportError: torch missing (torchvision source only).

    Example:
    >>> model = convert_file("deeplabv3_resnet50_coco-cd0a2569.pth", arch="deeplabv3_resnet50",
    ...                      output="deeplabv3_resnet50.keras")
    >>> model = convert_file("deeplabv3_pascal_train_aug_2018_01_04.tar.gz", source="tf-deeplab",
    ...                      arch="deeplabv3plus_xception65", output="xception65_voc.keras")
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: use one of {sorted(SOURCES)}.")
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
    layout = SOURCES[source]
    state_dict = read_source(path, source)
    if layout == "tf":
        aux = False
        if num_classes is None:
            num_classes = tf_checkpoint.infer_num_classes(state_dict, os.fspath(path))
    else:
        if aux is None:
            aux = any(k.startswith("aux_classifier.") for k in state_dict)
        if num_classes is None:
            num_classes = infer_num_classes(state_dict, path)
    if checkpoint is not None:
        file_classes = _LAYOUTS[layout]["num_classes"](state_dict, os.fspath(path))
        if file_classes != checkpoint.num_classes:
            raise ValueError(
                f"{os.fspath(path)} has {file_classes} classes, checkpoint {checkpoint.name} has "
                f"{checkpoint.num_classes} ({len(checkpoint.class_names)} class names and its "
                f"palette would not fit the model){_checkpoint_hint(arch, file_classes)}. Pass "
                f"that checkpoint's name, or the bare architecture name (arch={arch!r}) and your "
                "own class_names.")
    model = architecture.build(num_classes=num_classes, aux=aux, class_names=class_names,
                               palette=palette)
    assign_state_dict(model, state_dict, architecture.map_keys, source=os.fspath(path),
                      layout=layout, max_listed=None if layout == "torch" else 40, arch=arch,
                      target=checkpoint.name if checkpoint is not None else None)
    if output is not None:
        with atomic_path(output) as tmp:
            if _output_kind(output) == "weights":
                model.save_weights(tmp)
            else:
                model.save(tmp)
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
