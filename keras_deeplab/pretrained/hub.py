"""Download (once), convert (once), cache, load: `from_pretrained` and `download`."""

import hashlib
import os

import keras

from keras_deeplab.pretrained.convert import assign_state_dict, read_state_dict
from keras_deeplab.pretrained.registry import get_architecture, get_checkpoint
from keras_deeplab.provenance import atomic_path

#: Sub-directory of the Keras cache dir (``$KERAS_HOME``, default ``~/.keras``).
CACHE_SUBDIR = os.path.join("keras_deeplab", "pretrained")


def default_cache_dir():
    """``$KERAS_HOME`` or ``~/.keras`` (the directory ``keras.utils.get_file`` uses)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_steps(checkpoint, target):
    return (f"Download {checkpoint.url} yourself (e.g. in a browser or with curl) and either "
            f"put it at {target} or pass it: kd.models.from_pretrained({checkpoint.name!r}, "
            f"weights='path/to/{checkpoint.filename}').")


def download(name, cache_dir=None, origin=None):
    """Downloads a checkpoint's source file once and checks its published hash prefix.

    Uses ``keras.utils.get_file`` (progress bar, cache under
    ``<cache_dir>/keras_deeplab/pretrained/``; an existing file is not fetched again) and
    then compares the file's SHA-256 with the prefix the source publishes.

    Args:
        name: str or `Checkpoint`.
        cache_dir: str or None. Defaults to `default_cache_dir()`.
        origin: str or None. Download from here instead of the registry URL (a mirror or a
            ``file://`` URL); the hash is checked all the same.

    Returns:
        str: path of the verified file.

    Raises:
        ValueError: hash mismatch (a truncated or different file; it is deleted) or a failed
            download (no network). Both messages say what to download and where to put it.
    """
    checkpoint = get_checkpoint(name)
    cache_dir = cache_dir or default_cache_dir()
    target = os.path.join(cache_dir, CACHE_SUBDIR, checkpoint.filename)
    # get_file falls back to /tmp/.keras when cache_dir does not exist yet
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        path = keras.utils.get_file(checkpoint.filename, origin=origin or checkpoint.url,
                                    cache_dir=cache_dir, cache_subdir=CACHE_SUBDIR)
    except Exception as err:  # get_file raises Exception("URL fetch failure ...") and OSError
        if os.path.exists(target):
            os.remove(target)
        raise ValueError(f"Could not download {origin or checkpoint.url} ({err}). "
                         f"{_manual_steps(checkpoint, target)}") from err
    digest = _sha256(path)
    if not digest.startswith(checkpoint.sha256_prefix):
        os.remove(path)
        raise ValueError(
            f"{path}: SHA-256 {digest[:16]}... does not start with {checkpoint.sha256_prefix} "
            f"(published by {checkpoint.source} in the file name): a truncated or different "
            f"file; it was deleted. {_manual_steps(checkpoint, target)}")
    return path


def converted_path(name, cache_dir=None):
    """Where the converted Keras weights of a checkpoint are cached."""
    checkpoint = get_checkpoint(name)
    return os.path.join(cache_dir or default_cache_dir(), CACHE_SUBDIR,
                        f"{checkpoint.name}.weights.h5")


def _build(checkpoint, num_classes=None):
    arch = get_architecture(checkpoint.arch)
    same = num_classes is None or num_classes == checkpoint.num_classes
    return arch, arch.build(
        num_classes=checkpoint.num_classes if same else num_classes,
        aux=checkpoint.aux,
        class_names=list(checkpoint.class_names) if same else None,
        palette=checkpoint.palette if same else None,
    )


def _transfer(source, target):
    """Copies every weight of ``source`` into the same-named layer of ``target`` where all
    shapes agree; returns the names of target layers left as initialised."""
    def layers(model, prefix=""):
        out = {}
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                out.update(layers(layer, f"{prefix}{layer.name}."))
            elif layer.weights:
                out[f"{prefix}{layer.name}"] = layer
        return out

    src, fresh = layers(source), []
    for name, layer in layers(target).items():
        other = src.get(name)
        if other is None or [w.shape for w in other.weights] != [w.shape for w in layer.weights]:
            fresh.append(name)
            continue
        layer.set_weights(other.get_weights())
    return fresh


def from_pretrained(name, weights=None, num_classes=None, cache_dir=None):
    """A model with a published checkpoint's weights, converted exactly.

    The first call downloads the source file (`download`), converts it (needs torch) and
    caches the converted weights as ``<cache_dir>/keras_deeplab/pretrained/<name>.weights.h5``;
    later calls load that file (no torch, no network). The model takes float RGB in
    [0, 255] (the source's normalisation is a layer inside it), returns float32 logits at
    the input size (``{"logits", "aux_logits"}`` when the checkpoint has an auxiliary head),
    and carries ``class_names`` and ``palette`` (used by `kd.inference.Predictor`).

    Args:
        name: str. A checkpoint name (`list_pretrained`), e.g.
            "deeplabv3_resnet101.torchvision_coco_voc".
        weights: str or None. A local file instead of the download: the source's ``.pth``
            (needs torch; when its SHA-256 matches the published prefix the conversion is
            cached like a download's), or a ``.weights.h5`` of this architecture. Defaults
            to None.
        num_classes: int or None. Other than the checkpoint's (21): backbone and heads keep
            the checkpoint's weights, the final classifier convs are freshly initialised, and
            ``class_names`` / ``palette`` are None (for fine-tuning). Defaults to None.
        cache_dir: str or None. Defaults to ``$KERAS_HOME`` or ``~/.keras``.

    Returns:
        A `keras_deeplab.models.SegmentationModel`.

    Raises:
        ValueError: unknown name (lists the known ones), architecture not available, hash
            mismatch or failed download (says what to download and where to put it), a file
            that does not fit.
        ImportError: a ``.pth`` must be converted and torch is not installed.

    Example:
    >>> model = from_pretrained("deeplabv3_resnet50.torchvision_coco_voc")
    >>> labels = kd.inference.Predictor(model)("street.jpg").labels
    """
    checkpoint = get_checkpoint(name)
    arch, model = _build(checkpoint)
    cached = converted_path(checkpoint, cache_dir)
    if weights is not None and os.fspath(weights).endswith(".weights.h5"):
        model.load_weights(weights)
    elif weights is None and os.path.isfile(cached):
        model.load_weights(cached)
    else:
        path = download(checkpoint, cache_dir) if weights is None else os.fspath(weights)
        assign_state_dict(model, read_state_dict(path), arch.map_keys, source=path)
        if weights is None or _sha256(path).startswith(checkpoint.sha256_prefix):
            with atomic_path(cached) as tmp:
                model.save_weights(tmp)
    if num_classes is None or num_classes == checkpoint.num_classes:
        return model
    _, new = _build(checkpoint, num_classes)
    _transfer(model, new)
    return new
