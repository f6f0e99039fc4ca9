"""Sharded TFRecord writer and reader (PNG image + PNG mask + key) on any `tf.io.gfile` path.

Each record is a `tf.train.Example` with `image/encoded` (PNG, RGB), `mask/encoded` (PNG, one
channel of class ids) and `key` (bytes). The reader decodes both with
`keras_deeplab.data.decode` (the decoder of every loader and the Predictor). Paths may be local or remote (`gs://...`).
"""

import tensorflow as tf

from keras_deeplab.data import pipeline as _pipeline
from keras_deeplab.data.decode import tf_decode_image, tf_decode_mask


def _examples(dataset_or_source):
    ds = dataset_or_source.dataset() if hasattr(dataset_or_source, "dataset") else dataset_or_source
    if not isinstance(ds, tf.data.Dataset):
        raise TypeError("write_tfrecords takes a tf.data.Dataset of {'images', "
                        "'segmentation_masks'} examples or a keras_deeplab data source; got "
                        f"{type(dataset_or_source).__name__}.")
    if isinstance(ds.element_spec, tuple):
        ds = ds.map(lambda i, m: {"images": i, "segmentation_masks": m})
    if ds.element_spec["images"].shape.rank == 4:
        ds = ds.unbatch()
    return ds


def write_tfrecords(dataset_or_source, path_prefix, num_shards=1, progress=True):
    """Writes examples to `path_prefix-00000-of-0000N.tfrecord` shards (round robin).

    Args:
        dataset_or_source: `tf.data.Dataset` (batched or not, dict or tuple) or a source such as
            `kd.data.FolderSource`. Use an eval-mode (un-augmented) dataset.
        path_prefix: str. Any `tf.io.gfile` path prefix; its folder is created.
        num_shards: int. Defaults to 1.
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        list of the shard paths.

    Example:

    ```python
    kd.data.write_tfrecords(kd.data.FolderSource("imgs", "masks", 7), "/tmp/mine", num_shards=4)
    ds = kd.data.tfrecords("/tmp/mine-*", num_classes=7, batch_size=8)
    ```
    """
    folder = path_prefix.rsplit("/", 1)[0] if "/" in path_prefix else "."
    tf.io.gfile.makedirs(folder)
    paths = [f"{path_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    items = enumerate(_examples(dataset_or_source))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="writing tfrecords", unit="img")
    try:
        for i, ex in items:
            image = tf.cast(tf.clip_by_value(tf.round(ex["images"]), 0, 255), tf.uint8)
            mask = tf.cast(ex["segmentation_masks"], tf.int32)
            key = ex["key"].numpy() if "key" in ex else str(i).encode()
            if tf.reduce_any((mask < 0) | (mask > 255)):
                raise ValueError(f"example {i} (key {key!r}): mask values must be in [0, 255] to "
                                 "store as an 8-bit PNG; map them to class ids first.")

            def _bytes(v):
                return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

            feature = {
                "image/encoded": _bytes(tf.io.encode_png(image).numpy()),
                "mask/encoded": _bytes(tf.io.encode_png(tf.cast(mask, tf.uint8)).numpy()),
                "key": _bytes(key),
            }
            record = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[i % num_shards].write(record.SerializeToString())
    finally:
        for w in writers:
            w.close()
    return paths


class TFRecordSource:
    """Pipeline source reading shards written by `write_tfrecords`.

    Args:
        pattern: str. Glob of shard paths (any `tf.io.gfile` path).
        num_classes: int.
    """

    def __init__(self, pattern, num_classes):
        self.paths = sorted(tf.io.gfile.glob(pattern))
        if not self.paths:
            raise FileNotFoundError(f"No TFRecord shards match {pattern!r}; check the path or "
                                    "write them with kd.data.write_tfrecords.")
        self.num_classes, self.name = int(num_classes), pattern
        self._length = None

    def __len__(self):
        if self._length is None:
            self._length = sum(1 for _ in tf.data.TFRecordDataset(self.paths))
        return self._length

    def dataset(self):
        spec = {k: tf.io.FixedLenFeature([], tf.string)
                for k in ("image/encoded", "mask/encoded", "key")}

        def decode(record):
            ex = tf.io.parse_single_example(record, spec)
            # the one decoder of keras_deeplab.data.decode; errors name the record's key
            name = tf.strings.join(["record ", ex["key"], " of ", self.name])
            return {"images": tf_decode_image(ex["image/encoded"], name),
                    "segmentation_masks": tf_decode_mask(ex["mask/encoded"], name)}

        return tf.data.TFRecordDataset(self.paths).map(decode,
                                                       num_parallel_calls=tf.data.AUTOTUNE)


def tfrecords(pattern, num_classes, batch_size=8, training=False, crop_size=None,
              output="dict", augment=None, **pipeline_kwargs):
    """Dataset from TFRecord shards written by `write_tfrecords`.

    Args:
        pattern: str. Glob of shard paths, e.g. `"gs://bucket/cityscapes-train-*"`.
        num_classes: int.
        batch_size, training, crop_size, output, augment, **pipeline_kwargs: see
            `kd.data.make_pipeline`.
    """
    return _pipeline.make_pipeline(TFRecordSource(pattern, num_classes), batch_size=batch_size,
                                   training=training, crop_size=crop_size, output=output,
                                   augment=augment, **pipeline_kwargs)
