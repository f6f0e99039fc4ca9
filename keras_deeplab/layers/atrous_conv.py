"""Atrous (dilated) convolutions that take the native dilated kernel on TensorFlow."""

import keras

from keras_deeplab.utils import as_pair, register


def _native_tf_path(layer):
    return (
        keras.backend.backend() == "tensorflow"
        and max(as_pair(layer.dilation_rate, "dilation_rate")) > 1
        and layer.data_format == "channels_last"
    )


def _tf_dilated_conv2d(x, kernel, strides, padding, rates):
    """``tf.nn.conv2d`` with dilations, differentiable on every TF device.

    The forward pass is one native dilated ``Conv2D``. TensorFlow's CPU kernels for its
    gradients (``Conv2DBackpropInput/Filter``) reject dilations, so where no GPU is
    visible the gradient is taken through the space-to-batch formulation instead (same
    values; the unused forward of that formulation is pruned from the graph).
    """
    import tensorflow as tf

    conv_args = dict(strides=(1, *strides, 1), padding=padding, dilations=(1, *rates, 1))
    if tf.config.list_logical_devices("GPU"):
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
    ImageNet weights load unchanged.

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
