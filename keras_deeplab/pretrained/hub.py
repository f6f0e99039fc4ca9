"""Download (once), convert (once), cache, load: `from_pretrained` and `download`.

One path for every source: torchvision ``.pth`` files (hash prefix checked after the
download, converted with torch) and the TensorFlow DeepLab model zoo's ``.tar.gz`` archives
(no hash published: the archive's gzip/tar integrity is checked after the download and the
conversion checks every variable and shape; converted with TensorFlow only).
"""

import hashlib
import os
import tarfile

import keras

from keras_deeplab.pretrained import tf_checkpoint
from keras_deeplab.pretrained.convert import assign_state_dict, read_state_dict
from keras_deeplab.pretrained.registry import get_architecture, get_checkpoint
from keras_deeplab.provenance import atomic_path

#: Checkpoint.format -> (reader, assign layout).
_FORMATS = {
    "torch": (lambda path: read_state_dict(path), "torch"),
    "tf-checkpoint-archive": (lambda path: tf_checkpoint.read_tf_checkpoint(path), "tf"),
}

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


def _check_archive(path):
    """Reads a ``.tar.gz`` to its end (gzip CRC and tar headers): raises on truncation."""
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile():
                stream = tar.extractfile(member)
                while stream.read(1 << 22):
                    pass


def _makedirs(path):
    """Creates ``path`` and its missing parents; returns the folders it created, deepest
    first."""
    created = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        created.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(created):
        os.makedirs(folder, exist_ok=True)
    return created


def _remove_empty(folders):
    """Removes the given folders (deepest first) while they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (or gone): leave it and its parents
            return


def download(name, cache_dir=None, origin=None):
    """Downloads a checkpoint's source file once and checks it.

    Uses ``keras.utils.get_file`` (progress bar, cache under
    ``<cache_dir>/keras_deeplab/pretrained/``; an existing file is not fetched again), then
    compares the file's SHA-256 with the prefix the source publishes (torchvision). The
    TensorFlow DeepLab model zoo publishes no hash: its archive is read to the end instead
    (a truncated gzip/tar fails), and the conversion's full variable check (every variable,
    every shape) catches a wrong file.

    Args:
        name: str or `Checkpoint`.
        cache_dir: str or None. Defaults to `default_cache_dir()`.
        origin: str or None. Download from here instead of the registry URL (a mirror or a
            ``file://`` URL); the hash is checked all the same.

    Returns:
        str: path of the verified file.

    Raises:
        ValueError: hash mismatch or truncated archive (a truncated or different file; it is
            deleted) or a failed download (no network). The cache folders this call created
            are removed again when left empty. Each message says what to download and where
            to put it.
    """
    checkpoint = get_checkpoint(name)
    cache_dir = cache_dir or default_cache_dir()
    target = os.path.join(cache_dir, CACHE_SUBDIR, checkpoint.filename)
    # get_file falls back to /tmp/.keras when cache_dir does not exist yet
    created = _makedirs(os.path.dirname(target))
    try:
        path = keras.utils.get_file(checkpoint.filename, origin=origin or checkpoint.url,
                                    cache_dir=cache_dir, cache_subdir=CACHE_SUBDIR)
    except Exception as err:  # get_file raises Exception("URL fetch failure ...") and OSError
        if os.path.exists(target):
            os.remove(target)
        _remove_empty(created)
        raise ValueError(f"Could not download {origin or checkpoint.url} ({err}). "
                         f"{_manual_steps(checkpoint, target)}") from err
    if checkpoint.sha256_prefix is None:
        try:
            _check_archive(path)
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            os.remove(path)
            _remove_empty(created)
            raise ValueError(
                f"{path}: not a complete .tar.gz archive ({type(err).__name__}: {err}): a "
                f"truncated or different file; it was deleted ({checkpoint.source} publishes "
                f"no hash to check). {_manual_steps(checkpoint, target)}") from err
        return path
    digest = _sha256(path)
    if not digest.startswith(checkpoint.sha256_prefix):
        os.remove(path)
        _remove_empty(created)
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


def from_pretrained(name, weights=None, num_classes=None, cache_dir=None, origin=None):
    """A model with a published checkpoint's weights, converted exactly.

    The first call downloads the source file (`download`), converts it (a torchvision
    ``.pth`` needs torch; a TensorFlow DeepLab archive needs TensorFlow only) and caches the
    converted weights as ``<cache_dir>/keras_deeplab/pretrained/<name>.weights.h5``
    (written atomically); later calls load that file (no torch, no network). The model
    takes float RGB in [0, 255] (the source's normalisation is inside it), returns float32
    logits at the input size (``{"logits", "aux_logits"}`` when the checkpoint has an
    auxiliary head), and carries ``class_names`` and ``palette`` (used by
    `kd.inference.Predictor`).

    Args:
        name: str. A checkpoint name (`list_pretrained`), e.g.
            "deeplabv3_resnet101.torchvision_coco_voc" or
            "deeplabv3plus_xception65.tf_voc_trainaug".
        weights: str or None. A local file instead of the download: the source's ``.pth``
            (needs torch; when its SHA-256 matches the published prefix the conversion is
            cached like a download's); for a TensorFlow DeepLab checkpoint its ``.tar.gz``,
            a checkpoint prefix (``model.ckpt``), its ``.index`` file or a directory holding
            it (converted on every call: no hash is published to tell the published file
            from another one, so nothing is cached under the name); or a ``.weights.h5`` of
            this architecture. Defaults to None.
        num_classes: int or None. A class count other than the checkpoint's (21 for VOC,
            19 for Cityscapes, 151 for ADE20K: ``list_pretrained()``'s ``num_classes``):
            backbone and heads keep the checkpoint's weights, the final classifier convs are
            freshly initialised, and ``class_names`` / ``palette`` are None (for
            fine-tuning). Defaults to None.
        cache_dir: str or None. Defaults to ``$KERAS_HOME`` or ``~/.keras``.
        origin: str or None. Where to download the source file from instead of the
            registry URL: a mirror's URL or a ``file://`` URL of a local copy (passed to
            `download`; the file is then checked, converted and cached exactly like the
            published one). Ignored when ``weights`` is given or the conversion is cached.
            Defaults to None.

    Returns:
        A `keras_deeplab.models.SegmentationModel`.

    Raises:
        ValueError: unknown name (lists the known ones), architecture not available, hash
            mismatch, truncated archive or failed download (says what to download and where
            to put it), a file that does not fit (unmatched variables listed on both sides,
            after the file's class count or architecture where that tells why),
            a frozen graph ``.pb`` instead of a checkpoint.
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
        read, layout = _FORMATS[checkpoint.format]
        path = (download(checkpoint, cache_dir, origin=origin) if weights is None
                else os.fspath(weights))
        try:
            assign_state_dict(model, read(path), arch.map_keys, source=path, layout=layout,
                              max_listed=None if layout == "torch" else 40,
                              arch=checkpoint.arch, target=checkpoint.name)
        except ValueError as err:
            if weights is not None or checkpoint.sha256_prefix is not None:
                raise  # a user's file, or a download whose published hash matched
            os.remove(path)  # no hash published: a download that does not convert is not kept
            raise ValueError(f"{err}\nThe downloaded {path} was deleted. "
                             f"{_manual_steps(checkpoint, path)}") from err
        published = weights is None or (checkpoint.sha256_prefix is not None
                                        and _sha256(path).startswith(checkpoint.sha256_prefix))
        if published:
            with atomic_path(cached) as tmp:
                model.save_weights(tmp)
    if num_classes is None or num_classes == checkpoint.num_classes:
        return model
    _, new = _build(checkpoint, num_classes)
    _transfer(model, new)
    return new
