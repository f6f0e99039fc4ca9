"""Distribution helpers: pick a strategy, synchronize batch norm, check per-replica batches.

TensorFlow backend: `get_strategy` returns a `tf.distribute` strategy; build *and compile*
the model inside ``strategy.scope()`` and give ``model.fit`` the global batch.

JAX backend: use Keras' own data parallelism instead of a strategy::

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    model = kd.models.DeepLabV3Plus(...)   # built after set_distribution
    model.fit(train_ds, ...)               # the global batch is split over the devices

(`jax_data_parallel()` does the first two lines.) Batch-norm statistics are then computed per
device; synchronized BN is TensorFlow-only in Keras.

Batch norm: every keras_deeplab model or backbone built inside the scope of a strategy with
more than one replica synchronizes its batch norm by itself (see
`keras_deeplab.backbones.base.contract_init`); `sync_batchnorm` switches it for any model.
"""

from __future__ import annotations

import warnings

import keras

from keras_deeplab.backbones.base import batch_norm_layers, synchronize_batch_norm

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def get_strategy(kind="auto", devices=None, tpu=None):
    """Returns a `tf.distribute.Strategy`.

    Args:
        kind: str. "auto" (TPU if ``tpu`` is given, MirroredStrategy if more than one GPU,
            else the default strategy), "default", "mirrored" or "tpu". "multi_worker"
            raises: Keras 3's ``fit`` does not support MultiWorkerMirroredStrategy; see
            `keras_deeplab.training.multiworker` for the multi-process path (JAX).
            Defaults to "auto".
        devices: list of str or None. Devices for "mirrored" (e.g. ["/gpu:0", "/gpu:1"]).
            Defaults to all visible GPUs (or the CPU).
        tpu: str or None. TPU name/address for "tpu" ("" or "local" for a TPU VM).

    Returns:
        A strategy; under non-TensorFlow backends "auto"/"default" return None (see
        `jax_data_parallel`).

    Raises:
        ValueError: an unknown ``kind``, "multi_worker" (pointing to the working path), or a
            TensorFlow strategy on another backend.

    Example:
    ```python
    strategy = kd.training.get_strategy("mirrored")
    with strategy.scope():
        model = kd.models.DeepLabV3Plus(num_classes=19)   # BN synchronized (2+ replicas)
        model.compile(...)
    ```
    """
    if kind not in STRATEGIES:
        raise ValueError(f"Unknown strategy {kind!r}; expected one of {STRATEGIES}.")
    if keras.backend.backend() != "tensorflow":
        if kind in ("auto", "default"):
            return None
        raise ValueError(
            f"Strategy {kind!r} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); on "
            f"{keras.backend.backend()} use keras.distribution.DataParallel "
            "(kd.training.jax_data_parallel()).")
    import tensorflow as tf

    if kind == "auto":
        if tpu is not None:
            kind = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        raise ValueError(
            "get_strategy('multi_worker'): Keras 3's model.fit does not train under "
            "tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585; every worker "
            "fails before step 1 inside Keras). Train on several machines with Keras' own "
            "multi-process data parallelism on the JAX backend instead: KERAS_BACKEND=jax, "
            "kd.training.initialize_multi_process(coordinator, num_processes, process_id), "
            "kd.training.jax_data_parallel() (README, 'Training on several machines').")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu in (None, "local") else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def num_replicas(strategy=None):
    """Number of replicas of ``strategy`` (or of the current TF strategy); 1 elsewhere."""
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    if keras.backend.backend() != "tensorflow":
        distribution = keras.distribution.distribution()
        if distribution is not None and hasattr(distribution, "device_mesh"):
            return int(distribution.device_mesh.shape[0])
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def jax_data_parallel(devices=None):
    """Sets a `keras.distribution.DataParallel` distribution over ``devices`` (JAX backend)."""
    devices = devices or keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return distribution


def sync_batchnorm(model, synchronized=True):
    """Makes every BatchNormalization layer compute batch statistics across replicas.

    With plain BN each replica normalizes with the statistics of its own slice of the batch
    (2 images per GPU at batch 16 on 8 GPUs), which is noisier than the global batch and
    makes the trained weights depend on the number of replicas. Synchronized BN all-reduces
    the mean and variance, so training under `MirroredStrategy` matches single-device training
    on the same global batch (tested). Weights are unchanged; the flag is saved in the layers'
    configs. Call it before `compile`/`fit` (before the train function is traced).

    keras_deeplab models built inside a multi-replica strategy scope are synchronized
    already; this is for other Keras models, and ``synchronized=False`` turns it off.

    Only the TensorFlow backend supports it; elsewhere this warns and does nothing.

    Args:
        model: a Keras model.
        synchronized: bool. Defaults to True (False turns it off again).

    Returns:
        The number of BatchNormalization layers changed.

    Example:
    ```python
    with strategy.scope():
        model = build_my_keras_model()
        kd.training.sync_batchnorm(model)
    ```
    """
    if keras.backend.backend() != "tensorflow":
        warnings.warn("Synchronized batch norm is TensorFlow-only in Keras; leaving BN as is.",
                      stacklevel=2)
        return 0
    return synchronize_batch_norm(model, synchronized)


def check_per_replica_batch(global_batch_size, strategy=None, model=None, min_per_replica=4):
    """Warns when the per-replica batch is too small for (unsynchronized) batch norm.

    Args:
        global_batch_size: int. The batch given to `model.fit`.
        strategy: the strategy, or None for the current one.
        model: optional model; when all its BN layers are synchronized the check uses the
            global batch instead.
        min_per_replica: int. Smallest batch per replica considered safe. Defaults to 4.

    Returns:
        The per-replica batch size.

    Raises:
        ValueError: if the global batch is smaller than the number of replicas (an uneven
            split only warns).
    """
    replicas = num_replicas(strategy)
    global_batch_size = int(global_batch_size)
    if global_batch_size < replicas:
        raise ValueError(f"Global batch size {global_batch_size} is smaller than the number of "
                         f"replicas ({replicas}); some replicas would get no data.")
    per_replica = global_batch_size // replicas
    if global_batch_size % replicas:
        warnings.warn(f"Global batch {global_batch_size} does not divide evenly over "
                      f"{replicas} replicas.", stacklevel=2)
    bns = batch_norm_layers(model) if model is not None else []
    synced = bool(bns) and all(layer.synchronized for layer in bns)
    effective = global_batch_size if synced else per_replica
    if (model is None or bns) and effective < min_per_replica:
        warnings.warn(
            f"Batch norm sees only {effective} image(s) per replica ({global_batch_size} over "
            f"{replicas} replica(s)); statistics this small make training unstable. Use a "
            "larger batch, kd.training.sync_batchnorm(model) with several replicas, or freeze "
            "BN (DeepLab fine-tunes with frozen BN at small batches).", stacklevel=2)
    return per_replica
