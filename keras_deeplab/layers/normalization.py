"""Batch normalization that runs TensorFlow's fused kernel where it can (Keras semantics)."""

import os

import keras

from keras_deeplab.utils import register

# "0" makes every `BatchNormalization` use Keras' own (unfused) computation, e.g. to benchmark
# the two against each other; "1" or unset: fused where possible. Read at call / trace time.
FUSED_BN_ENV = "KERAS_DEEPLAB_FUSED_BN"

# Input dtypes the fused kernel takes directly (T of FusedBatchNormV3; statistics U = float32).
_FUSED_DTYPES = ("float32", "bfloat16")
# cuDNN rejects epsilon < CUDNN_BN_MIN_EPSILON (1e-5; tf.compat.v1.nn.fused_batch_norm clamps to
# this value for that reason): with a GPU visible, smaller epsilons keep Keras' computation.
_CUDNN_MIN_EPSILON = 1.001e-5


def _gpu_visible():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def fused_bn_enabled():
    """False when ``KERAS_DEEPLAB_FUSED_BN=0``; True when it is ``1`` or unset.

    Raises:
        ValueError: any other value (the variable is read at call / trace time).
    """
    value = os.environ.get(FUSED_BN_ENV, "1").strip() or "1"
    if value not in ("0", "1"):
        raise ValueError(
            f"{FUSED_BN_ENV}={value!r} (keras_deeplab/layers/normalization.py): expected '0' "
            "(Keras' own batch norm) or '1' (fused, the default); unset it for the default."
        )
    return value == "1"


@register
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TF's ``FusedBatchNormV3`` kernel.

    Same constructor, config, weights (``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``, float32) and semantics as Keras' layer, which it subclasses: weight
    conversion, ``isinstance(layer, keras.layers.BatchNormalization)`` checks and
    ``synchronized`` (SyncBN) keep working, and a model saved with Keras' layer loads into one
    built with this one. Only the TensorFlow computation differs: Keras 3 runs
    batch norm as separate ops (``Mean``, ``SquaredDifference``, ``Mul``, ``Sub``, ...), this
    layer as one ``FusedBatchNormV3`` (and ``FusedBatchNormGradV3`` in the gradient).

    When it is fused: TensorFlow backend, a 4-D channels-last input (``axis`` -1 or 3,
    shape ``(N, H, W, C)``) of dtype float32 or bfloat16, no mask, ``renorm=False``,
    ``synchronized=False`` and ``KERAS_DEEPLAB_FUSED_BN`` not ``0``. Everything else (JAX and
    PyTorch backends, other ranks or axes, float16/float64 inputs, masks, renorm, SyncBN, and
    ``epsilon < 1.001e-5`` when TensorFlow sees a GPU, because cuDNN rejects epsilons below
    its 1e-5 minimum; the GPU kernels are untested here) runs Keras' own ``call``. With the
    variable set to ``0`` (read at call / trace time, so set it before a model's step
    function is traced) the layer is exactly Keras' layer.

    - Training (``training and self.trainable``, as Keras decides): normalizes with the batch
      statistics over ``N*H*W`` and updates
      ``moving = moving * momentum + batch * (1 - momentum)`` with the *biased* batch
      variance, as Keras does. The kernel returns the Bessel-corrected (unbiased) variance,
      ``n / (n - 1)`` times the biased one for ``n = N*H*W > 1``, so it is scaled back by
      ``(n - 1) / n``. An empty batch (``n = 0``) returns an empty output and leaves the
      moving statistics unchanged (Keras' layer writes NaN into them).
    - Inference (``training`` false, or ``trainable=False``, as in fine-tuning with frozen
      BN): ``(x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta`` through
      the kernel with ``is_training=False``; SavedModel and TFLite export take this op
      (the TFLite converter folds it into the preceding convolution).
    - ``epsilon`` is passed to the raw op as given; ``tf.compat.v1.nn.fused_batch_norm`` would
      clamp it to >= 1.001e-5 (a cuDNN limit) and change e.g. the 1e-5 of torchvision layouts.
    - dtypes: statistics, ``gamma`` and ``beta`` are float32. A bfloat16 input (the
      ``mixed_bfloat16`` policy) goes into the kernel as bfloat16 (T=bfloat16, U=float32: it
      accumulates in float32), with no float32 cast of the activations; the output has the
      layer's compute dtype. Results equal Keras' layer to float32 round-off (float32) or
      one bfloat16 rounding (bfloat16).

    Args:
        Those of ``keras.layers.BatchNormalization`` (``axis=-1``, ``momentum=0.99``,
        ``epsilon=1e-3``, ``center``, ``scale``, initializers, regularizers, constraints,
        ``synchronized=False``, ``renorm``...), with the same defaults and meaning.

    Inputs: any rank Keras accepts; the fused path needs ``(N, H, W, C)``.
    Outputs: the input's shape, in the layer's compute dtype.

    Raises:
        ValueError: ``KERAS_DEEPLAB_FUSED_BN`` is set to something other than 0 or 1.

    Example:
    >>> bn = BatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> y = bn(keras.ops.ones((2, 8, 8, 16)), training=True)   # (2, 8, 8, 16)

    Sources: TensorFlow ``FusedBatchNormV3`` (tensorflow/core/kernels/fused_batch_norm_op.cc);
    Keras 3 ``BatchNormalization`` semantics; S. Ioffe and C. Szegedy, "Batch Normalization:
    Accelerating Deep Network Training by Reducing Internal Covariate Shift", ICML 2015.
    """

    def _fusable(self, inputs, mask):
        return (
            fused_bn_enabled()
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
            and (self.epsilon >= _CUDNN_MIN_EPSILON or not _gpu_visible())
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        # (the built weights' shape: the input's channel count may be unknown when traced)
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones_like(moving_mean)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(moving_mean)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=True,
            )
            shape = tf.shape(x)
            n = tf.reduce_prod(tf.cast(shape[:3], tf.float32))  # N*H*W, the values per channel
            variance = tf.where(n > 1.0, unbiased * ((n - 1.0) / tf.maximum(n, 1.0)), unbiased)
            # An empty batch has no statistics (the kernel returns NaN): keep the moving ones.
            self.moving_mean.assign(tf.where(
                n > 0.0, moving_mean * self.momentum + mean * (1.0 - self.momentum), moving_mean))
            self.moving_variance.assign(tf.where(
                n > 0.0, moving_variance * self.momentum + variance * (1.0 - self.momentum),
                moving_variance))
        else:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=False,
            )[0]
        return tf.cast(y, self.compute_dtype)
