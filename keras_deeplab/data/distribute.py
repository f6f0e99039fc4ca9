"""Input sharding for `tf.distribute` strategies."""

import tensorflow as tf

from keras_deeplab.data.padding import pad_batches

_POLICIES = {
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


def distribute(dataset, strategy=None, shard_policy="data", pad=True):
    """Distributes a batched dataset over the replicas of a strategy.

    The batch size of `dataset` is the **global** batch; each replica gets
    `batch / num_replicas_in_sync` examples. Multi-worker strategies shard the input by element
    (`"data"`, the safe default for our pipelines whose file lists are built in Python) or by file
    (`"file"`, for many TFRecord shards).

    Args:
        dataset: batched `tf.data.Dataset` from `keras_deeplab.data`.
        strategy: `tf.distribute.Strategy` or None. Defaults to the current strategy.
        shard_policy: str. `"data"`, `"file"`, `"auto"` or `"off"`. Defaults to `"data"`.
        pad: bool. Pad every batch to a multiple of the replica count with zero images
            labelled 255 everywhere (`keras_deeplab.data.padding.pad_batches`), so no replica
            gets an empty batch. Defaults to True.

    Returns:
        a `tf.distribute.DistributedDataset` (the dataset itself for the default strategy with
        one replica).

    Example:

    ```python
    strategy = tf.distribute.MirroredStrategy()
    ds = kd.data.distribute(kd.data.synthetic("train", batch_size=16), strategy)
    ```
    """
    if shard_policy not in _POLICIES:
        raise ValueError(f"shard_policy must be one of {sorted(_POLICIES)}; got {shard_policy!r}.")
    strategy = strategy or tf.distribute.get_strategy()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _POLICIES[shard_policy]
    dataset = dataset.with_options(options)
    if strategy.num_replicas_in_sync == 1 and not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    if pad:
        # a batch smaller than the replica count would leave a replica empty
        dataset = pad_batches(dataset, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_dataset(dataset)
