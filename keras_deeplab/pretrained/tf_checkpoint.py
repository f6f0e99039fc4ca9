"""TensorFlow DeepLab model-zoo checkpoints: read the TF1 checkpoint, name our layers by scope.

The model zoo (tensorflow/models ``research/deeplab/g3doc/model_zoo.md``) ships each model as
a ``.tar.gz`` holding a TF1/slim checkpoint (``model.ckpt.index`` +
``model.ckpt.data-00000-of-00001``) next to a frozen graph (``frozen_inference_graph.pb``).
`read_tf_checkpoint` reads the variables with ``tf.train.load_checkpoint`` (no TF1 graph, no
slim), straight from the archive if need be; `tf_named_layers` maps the variable scopes onto
our layers by name; `keras_deeplab.pretrained.convert.assign_state_dict` (``layout="tf"``)
checks and assigns them. Reading needs TensorFlow only (no torch).

Variable names (TF1/slim; Keras layout = TF layout, no transposes):

- conv: ``<scope>/weights`` (kh, kw, in, out) [+ ``<scope>/biases`` (out,): the logits only]
- depthwise conv: ``<scope>/depthwise_weights`` (kh, kw, in, 1)
- batch norm: ``<scope>/BatchNorm/{gamma,beta,moving_mean,moving_variance}``
- ignored: ``global_step``, optimizer slots (``*/Momentum``, ``*/Adam``, ``*/Adam_1``,
  ``*/RMSProp*``) and ``*/ExponentialMovingAverage`` (`is_training_state`).

Naming rule of our layers: every weight-holding layer is named after its TF scope relative to
its (sub-)model with "/" written as "-" (Keras forbids "/" in names); its BN layer is
``<conv layer name>-BatchNorm``; a nested backbone sub-model is named after the TF top scope
(``"xception_65"``). Layer ``"entry_flow-block1-unit_1-xception_module-separable_conv1_depthwise"``
of sub-model ``"xception_65"`` <-> scope
``"xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise"``.
"""

import collections
import os
import re
import tarfile
import tempfile

import keras
import numpy as np

#: Name of the logits variable whose last dimension is the class count.
LOGITS_WEIGHTS = "logits/semantic/weights"

#: Top scope of a model-zoo backbone -> the registered architectures built on it (with a
#: ``decoder/`` scope: DeepLabv3+; without: DeepLabv3).
TOP_SCOPES = {
    "xception_65": ("deeplabv3plus_xception65",),
    "MobilenetV2": ("deeplabv3_mobilenetv2", "deeplabv3plus_mobilenetv2"),
}

_TRAINING_STATE = re.compile(
    r"(^global_step$)|(/(Momentum|Adam|Adam_1|ExponentialMovingAverage)$)|(/RMSProp[^/]*$)")
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def is_training_state(name):
    """True for checkpoint variables that are not model weights: ``global_step``, optimizer
    slots (``*/Momentum``, ``*/Adam``, ``*/Adam_1``, ``*/RMSProp*``) and moving averages
    (``*/ExponentialMovingAverage``).

    Example:
    >>> is_training_state("aspp0/weights/Momentum"), is_training_state("aspp0/weights")
    (True, False)
    """
    return bool(_TRAINING_STATE.search(name))


def named_layers(model, separator):
    """``{name path: layer}`` of the weight-holding layers of ``model``, names read with a
    separator.

    The one walker behind `tf_named_layers` ("/") and `convert.torch_named_layers` ("."):
    every layer that owns weights (not a nested model) is keyed by its name with each "-"
    replaced by ``separator`` (Keras forbids "/" in names, and on the PyTorch backend "."
    in variable paths); a layer of a nested model is keyed
    ``"<sub-model name><separator><layer name>"``, recursively.

    Args:
        model: keras.Model.
        separator: str, what "-" in a layer name and the nesting stand for.

    Returns:
        dict ``{key: keras.layers.Layer}`` in layer order.
    """
    mapping = {}

    def walk(m, prefix):
        for layer in m.layers:
            name = layer.name.replace("-", separator)
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{name}{separator}")
            elif layer.weights:
                mapping[f"{prefix}{name}"] = layer

    walk(model, "")
    return mapping


def tf_named_layers(model):
    """``{TF variable scope: layer}`` for a model whose layers follow the naming rule.

    Every layer that owns weights (not a nested model) is keyed by its name with "-" read as
    "/"; a layer of a nested functional model is keyed ``"<sub-model name>/<layer name>"``
    (recursively), so the backbone sub-model ``"xception_65"`` holding
    ``"entry_flow-conv1_1-BatchNorm"`` gives ``"xception_65/entry_flow/conv1_1/BatchNorm"``.

    Args:
        model: keras.Model.

    Returns:
        dict ``{scope: keras.layers.Layer}`` in layer order.
    """
    return named_layers(model, "/")


def _is_archive(path):
    return path.endswith((".tar.gz", ".tgz", ".tar"))


def _frozen_graph_error(path):
    return ValueError(
        f"{path!r} is a frozen inference graph (.pb), not a checkpoint: its weights are "
        "constants of a TF1 graph. Give the model-zoo archive itself (the .tar.gz) or the "
        "model.ckpt.index next to frozen_inference_graph.pb in the same archive (with its "
        "model.ckpt.data-00000-of-00001 beside it).")


def checkpoint_prefix(path):
    """The checkpoint prefix for a user-given path.

    Accepts a prefix (``".../model.ckpt"``, ``".../model.ckpt-30000"``), its ``.index`` or
    ``.data-00000-of-00001`` file, or a directory holding exactly one checkpoint.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a frozen graph ``.pb``; a directory with no or several checkpoints; a
            prefix whose ``.index`` or data file is missing.
    """
    path = os.fspath(path)
    if path.endswith(".pb"):
        raise _frozen_graph_error(path)
    if os.path.isdir(path):
        indexes = sorted(f for f in os.listdir(path) if f.endswith(".index"))
        if len(indexes) != 1:
            held = ", ".join(sorted(os.listdir(path))[:20]) or "nothing"
            what = "no checkpoint (no *.index file)" if not indexes else \
                f"{len(indexes)} checkpoints ({', '.join(indexes)})"
            raise ValueError(f"Directory {path!r} holds {what}; it holds: {held}. Pass the "
                             "checkpoint's .index file.")
        path = os.path.join(path, indexes[0])
    if path.endswith(".index"):
        prefix = path[: -len(".index")]
    elif _DATA_SUFFIX.search(path):
        prefix = _DATA_SUFFIX.sub("", path)
    else:
        prefix = path
    if not os.path.exists(prefix + ".index"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"No checkpoint at {path!r} (nor {prefix + '.index'!r}).")
        raise ValueError(f"{path!r} is not a TF checkpoint: {prefix + '.index'!r} is missing. "
                         "Give a checkpoint prefix (model.ckpt), its .index file, a directory "
                         "holding one checkpoint, or the model-zoo .tar.gz.")
    folder, stem = os.path.split(os.path.abspath(prefix))
    if not any(f.startswith(stem + ".data-") for f in os.listdir(folder)):
        raise ValueError(f"{prefix + '.index'!r} has no data file ({stem}.data-00000-of-00001) "
                         "beside it: copy both files of the checkpoint.")
    return prefix


def _read_prefix(prefix, source):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        out = {n: np.asarray(reader.get_tensor(n)) for n in names if not is_training_state(n)}
    except Exception as err:  # DataLossError, OutOfRangeError, NotFoundError, ...
        raise ValueError(
            f"{source!r} is not a readable TF checkpoint ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}). A truncated "
            "download or a file of another format gives this; download the model-zoo archive "
            "again (its URL: kd.models.list_pretrained()).") from err
    if not out:
        raise ValueError(f"{source!r} holds no model variables (only training state such as "
                         "global_step or optimizer slots).")
    return out


def _checkpoint_members(tar, source):
    """{prefix inside the archive: [members]} of the checkpoints in an open tar."""
    members = tar.getmembers()
    groups = {}
    for m in members:
        if not m.isfile():
            continue
        if m.name.endswith(".index"):
            groups.setdefault(m.name[: -len(".index")], [])
    for m in members:
        if not m.isfile():
            continue
        for prefix in groups:
            rest = m.name[len(prefix):]
            if m.name.startswith(prefix) and (rest == ".index" or _DATA_SUFFIX.fullmatch(rest)):
                groups[prefix].append(m)
    if not groups:
        held = [m.name for m in members if m.isfile()]
        pb = [n for n in held if n.endswith(".pb")]
        hint = (" It has a frozen graph (" + ", ".join(pb) + ") but no checkpoint: the weights "
                "are read from model.ckpt.index + model.ckpt.data-*, which the model-zoo "
                "archives of tensorflow/models research/deeplab hold next to it.") if pb else ""
        raise ValueError(f"Archive {source!r} holds no checkpoint (no *.index member); it "
                         f"holds: {', '.join(held[:20]) or 'no files'}.{hint}")
    if len(groups) > 1:
        raise ValueError(f"Archive {source!r} holds {len(groups)} checkpoints "
                         f"({', '.join(sorted(groups))}); extract it and pass one .index file.")
    return next(iter(groups.items()))


def _read_archive(path):
    try:
        with tarfile.open(path, "r:*") as tar:
            prefix, members = _checkpoint_members(tar, path)
            with tempfile.TemporaryDirectory(prefix="kd-tf-ckpt-") as tmp:
                stem = os.path.basename(prefix)
                for m in members:
                    # written under our own name (basename in a fresh folder): no member path
                    # or link is ever followed, so nothing lands outside ``tmp``
                    target = os.path.join(tmp, stem + m.name[len(prefix):])
                    src = tar.extractfile(m)
                    with open(target, "wb") as f:
                        while True:
                            chunk = src.read(1 << 20)
                            if not chunk:
                                break
                            f.write(chunk)
                if not any(_DATA_SUFFIX.search(m.name) for m in members):
                    raise ValueError(f"Archive {path!r} holds {prefix}.index but no "
                                     f"{stem}.data-* file: an incomplete archive.")
                return _read_prefix(os.path.join(tmp, stem), f"{path} ({prefix})")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(
            f"{path!r} is not a readable .tar.gz archive ({type(err).__name__}: {err}). A "
            "truncated download gives this; download it again (its URL: "
            "kd.models.list_pretrained()).") from err


def read_tf_checkpoint(path):
    """Reads a TF1 checkpoint into ``{variable name: np.ndarray}``, training state dropped.

    Args:
        path: str. One of: a checkpoint prefix (``"model.ckpt"``); its ``.index`` or
            ``.data-00000-of-00001`` file; a directory holding one checkpoint; the model
            zoo's ``.tar.gz`` archive (only the checkpoint members are extracted, to a
            temporary folder removed afterwards; they may be ``model.ckpt.*`` or
            ``model.ckpt-30000.*``, in a sub-folder).

    Returns:
        dict ``{name: np.ndarray}`` (float32 weights and BN statistics) without
        `is_training_state` variables.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a frozen graph ``.pb`` (says which file to use instead); an archive
            without a checkpoint (lists what it holds); an unreadable or truncated file;
            a checkpoint holding only training state.

    Example:
    >>> weights = read_tf_checkpoint("deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz")
    >>> weights["logits/semantic/weights"].shape
    (1, 1, 256, 21)
    """
    path = os.fspath(path)
    if _is_archive(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No archive at {path!r}.")
        return _read_archive(path)
    return _read_prefix(checkpoint_prefix(path), path)


def infer_num_classes(variables, source="checkpoint"):
    """Class count of a DeepLab checkpoint: last dimension of ``logits/semantic/weights``.

    Raises:
        ValueError: no such variable (not a TF DeepLab segmentation checkpoint).
    """
    if LOGITS_WEIGHTS not in variables:
        sample = ", ".join(sorted(variables)[:8])
        raise ValueError(f"{source}: no {LOGITS_WEIGHTS!r} variable, so not a TensorFlow "
                         f"DeepLab segmentation checkpoint (its variables: {sample}, ...). An "
                         "ImageNet-only backbone checkpoint has no logits.")
    return int(np.shape(variables[LOGITS_WEIGHTS])[-1])


def guess_architecture(names):
    """Which model-zoo architecture a checkpoint's variables look like.

    Args:
        names: iterable of variable names (a `read_tf_checkpoint` dict works).

    Returns:
        ``(top scope, [architecture names])``: the most common first scope component among
        the names holding a "/" (``"xception_65"``, ``"MobilenetV2"``) and the `TOP_SCOPES`
        architectures of it, narrowed by whether a ``decoder/`` scope is present (empty
        when the scope is no known backbone's); ``(None, [])`` for names without scopes.

    Example:
    >>> guess_architecture(["MobilenetV2/Conv/weights", "aspp0/weights", "decoder/x/weights"])
    ('MobilenetV2', ['deeplabv3plus_mobilenetv2'])
    """
    names = list(names)
    counts = collections.Counter(n.split("/", 1)[0] for n in names if "/" in n)
    known = [s for s, _ in counts.most_common() if s in TOP_SCOPES]
    if not counts:
        return None, []
    if not known:
        return counts.most_common(1)[0][0], []
    scope = known[0]
    plus = any(n.startswith("decoder/") for n in names)
    archs = [a for a in TOP_SCOPES[scope] if a.startswith("deeplabv3plus_") == plus]
    return scope, archs or list(TOP_SCOPES[scope])
