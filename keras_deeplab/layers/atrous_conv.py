"""Atrous (dilated) convolutions that take the native dilated kernel on TensorFlow."""

import contextlib
import os
import threading

import keras

from keras_deeplab.utils import as_pair, register


def _native_tf_path(layer):
    return (
        keras.backend.backend() == "tensorflow"
        and max(as_pair(layer.dilation_rate, "dilation_rate")) > 1
        and layer.data_format == "channels_last"
    )


# How the gradient of a dilated conv is taken on TensorFlow. "auto" (the default) probes the
# running kernels once per process, device and dtype; "native" / "space_to_batch" force one
# path (for tests and benchmarks). Read from KERAS_DEEPLAB_DILATED_GRADIENT at trace time.
DILATED_GRADIENT_ENV = "KERAS_DEEPLAB_DILATED_GRADIENT"
DILATED_GRADIENT_MODES = ("auto", "native", "space_to_batch")
_native_gradient_support = {}  # (device, dtype) -> bool, filled by the probe


def _dilated_gradient_mode():
    mode = os.environ.get(DILATED_GRADIENT_ENV, "auto").strip().lower() or "auto"
    if mode not in DILATED_GRADIENT_MODES:
        raise ValueError(
            f"{DILATED_GRADIENT_ENV}={mode!r} (keras_deeplab/layers/atrous_conv.py): expected "
            f"one of {DILATED_GRADIENT_MODES}; unset it to let the layer probe the kernels."
        )
    return mode


def _probe_native_dilated_gradient(dtype):
    """Runs the native gradient of a rate-2 ``tf.nn.conv2d`` on a 1x7x7x2 tensor, eagerly
    and inside a ``tf.function`` (oneDNN rewrites graphs and eager ops separately), and
    compares it with the space-to-batch gradient. True if both run and agree."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(size=(1, 7, 7, 2)), dtype)
    kernel = tf.cast(rng.normal(size=(3, 3, 2, 3)), dtype)

    def grads(native):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            if native:
                y = tf.nn.conv2d(x, kernel, 1, "SAME", dilations=2)
            else:
                y = tf.nn.convolution(x, kernel, padding="SAME", dilations=2)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        return [tf.cast(g, tf.float32) for g in tape.gradient(loss, [x, kernel])]

    try:
        reference = grads(native=False)
        candidates = grads(native=True) + tf.function(lambda: grads(native=True))()
    except (tf.errors.OpError, NotImplementedError):
        return False
    tol = 5e-2 if dtype in (tf.bfloat16, tf.float16) else 1e-4
    return all(
        np.allclose(got.numpy(), ref.numpy(), rtol=tol, atol=tol * float(tf.reduce_max(tf.abs(ref))))
        for got, ref in zip(candidates, reference + reference)
    )


def native_dilated_gradient_supported(dtype="float32", device=None):
    """Whether TensorFlow's own dilated ``Conv2DBackpropInput/Filter`` run on this process.

    Decided by a one-time probe per (device, dtype) and cached for the process: the native
    gradient of a rate-2 ``tf.nn.conv2d`` is run on a 1x7x7x2 tensor (eagerly and traced)
    on ``device`` and compared with the space-to-batch gradient. The answer depends on the
    kernels TensorFlow runs, not on the hardware alone: cuDNN (GPU) and oneDNN (TF's
    default CPU kernels on x86) support dilated backprop; TF's Eigen CPU kernels
    (``TF_ENABLE_ONEDNN_OPTS=0``) reject it ("Current CPU implementations do not yet
    support dilation rates larger than 1").

    The environment variable ``KERAS_DEEPLAB_DILATED_GRADIENT`` overrides the probe:
    ``native`` (True), ``space_to_batch`` (False) or ``auto`` (probe; the default).

    Args:
        dtype: str or tf.DType. Compute dtype of the convolution. Defaults to "float32".
        device: str or None. TF device to probe (e.g. "/GPU:0"); None (default) probes
            the device TensorFlow places ops on by default.

    Returns:
        bool.

    Raises:
        ValueError: the environment variable holds an unknown mode.
    """
    import tensorflow as tf

    mode = _dilated_gradient_mode()
    if mode != "auto":
        return mode == "native"
    dtype = tf.as_dtype(dtype)
    key = (device or "", dtype.name)
    if key not in _native_gradient_support:
        # A fresh thread runs eagerly, outside any graph being traced, tape or
        # distribution strategy of the caller (tf.init_scope would pause the tape).
        result = []

        def probe():
            with tf.device(device) if device else contextlib.nullcontext():
                result.append(_probe_native_dilated_gradient(dtype))

        thread = threading.Thread(target=probe, name="keras_deeplab-dilated-gradient-probe")
        thread.start()
        thread.join()
        if not result:
            raise RuntimeError("keras_deeplab/layers/atrous_conv.py: the dilated-gradient "
                               "probe thread failed; see the traceback printed above.")
        _native_gradient_support[key] = result[0]
    return _native_gradient_support[key]


def _tf_dilated_conv2d(x, kernel, strides, padding, rates):
    """``tf.nn.conv2d`` with dilations, differentiable on every TF device.

    The forward pass is one native dilated ``Conv2D``. Its gradient is TensorFlow's own
    (dilated ``Conv2DBackpropInput/Filter``) wherever the running kernels support it
    (`native_dilated_gradient_supported`, probed once per process, device and dtype);
    where they don't (TF's Eigen CPU kernels, ``TF_ENABLE_ONEDNN_OPTS=0``) the gradient is
    taken through the space-to-batch formulation instead (same values; the unused forward
    of that formulation is pruned from the graph). The choice is made when the op is
    traced, in the process that runs it: with the native gradient the graph holds the
    plain ``Conv2D`` only, whose gradient TensorFlow looks up where it is differentiated.
    """
    import tensorflow as tf

    conv_args = dict(strides=(1, *strides, 1), padding=padding, dilations=(1, *rates, 1))
    if native_dilated_gradient_supported(x.dtype, device=x.device or None):
        return tf.nn.conv2d(x, kernel, **conv_args)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = tf.nn.convolution(x, kernel, strides=strides, padding=padding, dilations=rates)
            return tape.gradient(y, [x, kernel], output_gradients=dy)

        return tf.nn.conv2d(x, kernel, **conv_args), grad

    return conv(x, kernel)


@register
class AtrousConv2D(keras.layers.Conv2D):
    """2D atrous convolution: `keras.layers.Conv2D` with a faster dilated path on TensorFlow.

    Keras lowers ``Conv2D(dilation_rate>1)`` to ``tf.nn.convolution``, which wraps the
    convolution in ``SPACE_TO_BATCH_ND`` / ``BATCH_TO_SPACE_ND``. That is 1.5-4x slower on
    CPU and shows up as three ops in TFLite. This layer calls ``tf.nn.conv2d(...,
    dilations=rate)`` instead, which oneDNN (CPU), cuDNN (GPU) and the TFLite converter
    (``CONV_2D`` with ``dilation_*_factor``) all run natively. On JAX and PyTorch the parent
    implementation is already native. Weights and config are those of ``Conv2D``, so
    ImageNet weights load unchanged. The gradient is TensorFlow's native dilated backprop
    wherever the running kernels have it (oneDNN, cuDNN) and the space-to-batch gradient
    where they don't (TF's Eigen CPU kernels, ``TF_ENABLE_ONEDNN_OPTS=0``), decided by
    `native_dilated_gradient_supported` once per process.

    Args: the same as `keras.layers.Conv2D`.

    Example:
    >>> conv = AtrousConv2D(256, 3, dilation_rate=12, padding="same")

    Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
    Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 and _native_tf_path(self):
            return _tf_dilated_conv2d(
                inputs,
                keras.ops.cast(kernel, inputs.dtype),
                strides=as_pair(self.strides, "strides"),
                padding=self.padding.upper(),
                rates=as_pair(self.dilation_rate, "dilation_rate"),
            )
        return super().convolution_op(inputs, kernel)


@register
class AtrousDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Depthwise atrous convolution that can trace as one native dilated depthwise op.

    ``tf.nn.depthwise_conv2d`` (what Keras uses) wraps dilation in space-to-batch. That
    is the fast form on the TF CPU runtime, whose native depthwise kernel rejects
    dilations (~1 ms for a 65x65x96 rate-2 conv, where a grouped ``conv2d`` takes ~30 ms),
    so it is what the layer runs for training and inference. With the attribute
    ``native_dilation = True`` the layer instead emits one ``DepthwiseConv2dNative`` with
    ``dilations``, which the TFLite converter maps to ``DEPTHWISE_CONV_2D`` with dilation
    factors for static and dynamic input sizes (the space-to-batch form only folds back
    for static sizes). `kd.export.tflite` sets the attribute on the model's layers while
    it traces the model and restores it afterwards. The attribute is per layer, is not
    part of ``get_config()`` and changes only what a TensorFlow trace contains (same
    values; it has no effect on JAX/PyTorch, without dilation or with channels_first).

    Args: the same as `keras.layers.DepthwiseConv2D`.

    Attributes:
        native_dilation: bool. Trace the native dilated op (for export; the TF CPU
            runtime cannot execute it). Defaults to False.

    Example:
    >>> conv = AtrousDepthwiseConv2D(3, dilation_rate=2, padding="same")
    >>> conv.native_dilation = True  # what kd.export.tflite does while tracing
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.native_dilation = False

    def call(self, inputs):
        if not (self.native_dilation and _native_tf_path(self)):
            return super().call(inputs)
        import tensorflow as tf

        outputs = tf.raw_ops.DepthwiseConv2dNative(
            input=inputs,
            filter=keras.ops.cast(self.kernel, inputs.dtype),
            strides=(1, *as_pair(self.strides, "strides"), 1),
            padding=self.padding.upper(),
            dilations=(1, *as_pair(self.dilation_rate, "dilation_rate"), 1),
        )
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
