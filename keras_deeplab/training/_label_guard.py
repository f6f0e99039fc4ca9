"""Guards against labels that are neither a class id nor the ignore label (private).

Keras' own `MeanIoU` and `SparseCategoricalCrossentropy` drop such pixels silently: a dataset
still holding raw ids (Cityscapes labelIds 0..33 against 19 trainIds, say) then scores a
perfect mIoU on the few pixels that happen to be valid. The compiled metrics and losses of
this package refuse them instead:

- with the TensorFlow backend outside XLA (eager, `tf.function`, `tf.distribute`) and with
  PyTorch, an error names the first offending value and the fix;
- everywhere (including XLA-compiled steps, where TensorFlow drops assertions), the metric
  counts the offending pixels in a variable and reports NaN, and the loss becomes NaN, so
  `kd.callbacks.StopOnNaN` / `keras.callbacks.TerminateOnNaN` stop the run and no score
  looks perfect.
"""

from __future__ import annotations

import keras
from keras import ops


def invalid_mask(labels, num_classes, ignore_class):
    """Boolean mask of labels outside [0, num_classes) that are not ``ignore_class``."""
    bad = ops.logical_or(ops.less(labels, 0), ops.greater_equal(labels, num_classes))
    if ignore_class is not None:
        bad = ops.logical_and(bad, ops.not_equal(labels, ignore_class))
    return bad


def _message(owner, num_classes, ignore_class):
    ignore = "" if ignore_class is None else f" nor the ignore label {ignore_class}"
    return (f"{owner}: the labels hold a value that is neither a class id in [0, {num_classes})"
            f"{ignore}; map the dataset's raw ids to class ids (e.g. Cityscapes labelIds -> "
            "trainIds), fix num_classes, or set such pixels to the ignore label. First "
            "offending value:")


def check_labels(labels, num_classes, ignore_class, owner):
    """``labels`` (int32), after an error check naming the first invalid value.

    The check runs where the backend can raise from inside a step: TensorFlow (eager or
    graph; XLA drops it) and PyTorch. Elsewhere the callers' NaN fallback remains.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly() or not _inside_xla():
            bad = invalid_mask(labels, num_classes, ignore_class)
            first = tf.boolean_mask(labels, bad)[:1]
            check = tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(bad)),
                [_message(owner, num_classes, ignore_class), first], summarize=1)
            with tf.control_dependencies([check] if check is not None else []):
                return tf.identity(labels)
    elif backend == "torch":
        bad = invalid_mask(labels, num_classes, ignore_class)
        if bool(ops.convert_to_numpy(ops.any(bad))):
            first = int(ops.convert_to_numpy(labels[bad][0]))
            raise ValueError(f"{_message(owner, num_classes, ignore_class)} {first}.")
    return labels


def _inside_xla():
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    except (ImportError, AttributeError):  # private API moved: assert anyway
        return False


class LabelGuard:
    """Mixin for confusion-matrix metrics: refuse or count labels outside the classes.

    Adds the variable ``invalid_labels`` (pixels seen whose label is neither a class id nor
    ``ignore_class``, summed over replicas); ``result()`` is NaN once it is non-zero.
    Subclasses call ``_guard_init()`` after ``super().__init__`` and route labels through
    ``_guard_labels`` in ``update_state``.
    """

    def _guard_init(self):
        self.invalid_labels = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                                aggregation="sum", name="invalid_labels")

    def _guard_labels(self, labels):
        labels = check_labels(labels, self.num_classes, self.ignore_class,
                              f"{type(self).__name__} {self.name!r}")
        count = ops.sum(ops.cast(invalid_mask(labels, self.num_classes, self.ignore_class),
                                 "float32"))
        self.invalid_labels.assign_add(count)
        return labels

    def _guard_result(self, value):
        return ops.where(ops.greater(self.invalid_labels, 0.0),
                         ops.cast(float("nan"), value.dtype), value)

    def reset_state(self):
        super().reset_state()
        self.invalid_labels.assign(0.0)
