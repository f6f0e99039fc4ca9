"""DeepLab's conv + BN and split separable-conv blocks, named after the TF scopes they replace.

Two functional helpers (they add layers to a Keras functional graph and return the output
tensor) shared by the TensorFlow DeepLab model-zoo architectures (Xception-65 backbone, ASPP
and decoder heads). Every weight-holding layer is named after its TF1/slim scope with "/"
written as "-" and its batch norm is ``<conv layer name>-BatchNorm``, so
``keras_deeplab.pretrained.tf_checkpoint.tf_named_layers`` maps the published checkpoint
variables onto them by name (``<scope>/weights``, ``<scope>/depthwise_weights``,
``<scope>/BatchNorm/{gamma,beta,moving_mean,moving_variance}``; Keras layout = TF layout).

Source: tensorflow/models research/deeplab/core/xception.py (``fixed_padding``,
``separable_conv2d_same``), research/deeplab/core/utils.py (``split_separable_conv2d``),
research/slim/nets/resnet_utils.py (``conv2d_same``).
"""

import keras

from keras_deeplab.layers.atrous_conv import AtrousConv2D, AtrousDepthwiseConv2D
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.utils import as_pair


def fixed_padding_amounts(kernel_size, dilation_rate=1):
    """``(begin, end)`` zero padding of DeepLab's ``fixed_padding`` for one spatial axis.

    The effective kernel size is ``k + (k - 1) * (rate - 1)``; the total padding is that
    minus one, ``begin = total // 2`` and ``end = total - begin``, independent of the input
    size (TF's "SAME" padding depends on it and, for strided convs on even sizes, pads one
    pixel less at the beginning).

    Example:
    >>> fixed_padding_amounts(3)
    (1, 1)
    >>> fixed_padding_amounts(3, dilation_rate=2)
    (2, 2)
    """
    kernel_size, dilation_rate = int(kernel_size), int(dilation_rate)
    total = kernel_size + (kernel_size - 1) * (dilation_rate - 1) - 1
    begin = total // 2
    return begin, total - begin


def _padding(x, kernel_size, dilation_rate, strides, explicit_padding, name):
    """Returns (tensor, keras padding mode) for one conv: DeepLab's fixed padding + "valid"
    where the original pads explicitly (explicit padding and a stride > 1), else "same"."""
    if not explicit_padding or max(as_pair(strides, "strides")) == 1:
        return x, "same"
    kh, kw = as_pair(kernel_size, "kernel_size")
    rh, rw = as_pair(dilation_rate, "dilation_rate")
    pad = (fixed_padding_amounts(kh, rh), fixed_padding_amounts(kw, rw))
    return keras.layers.ZeroPadding2D(pad, name=name)(x), "valid"


def _batch_norm(x, name, epsilon, momentum):
    return BatchNormalization(epsilon=epsilon, momentum=momentum, name=name)(x)


def _activation(x, activation, name):
    if activation is None or activation == "linear":
        return x
    return keras.layers.Activation(activation, name=name)(x)


def conv_bn(
    x,
    filters,
    kernel_size,
    name,
    strides=1,
    dilation_rate=1,
    activation="relu",
    explicit_padding=False,
    bn_epsilon=1e-3,
    bn_momentum=0.9997,
    use_bias=False,
    kernel_regularizer=None,
):
    """Convolution -> batch norm -> activation, as slim's ``conv2d`` with DeepLab's arg scopes.

    Adds the layers ``name`` (the convolution: TF variable ``<scope>/weights`` of shape
    (kh, kw, in, filters)), ``name-BatchNorm`` and, with ``explicit_padding`` and a stride
    > 1, ``name-pad`` (a ZeroPadding2D of `fixed_padding_amounts`, then a "valid" conv:
    slim ``resnet_utils.conv2d_same``, used by Xception's ``entry_flow/conv1_1``). Otherwise
    the conv pads "same" as TensorFlow does. An activation other than None/"linear" adds
    ``name-act``. Dilated convs are `AtrousConv2D` (TF's native dilated kernel).

    Args:
        x: tensor (B, H, W, C) of a Keras functional graph.
        filters: int. Output channels.
        kernel_size: int or pair. Kernel size.
        name: str. Layer name: the TF scope with "/" written as "-".
        strides: int. Stride. Defaults to 1.
        dilation_rate: int. Atrous rate (with stride 1). Defaults to 1.
        activation: str or None. Activation after BN ("relu", "relu6", ...; None or
            "linear" for none). Defaults to "relu".
        explicit_padding: bool. DeepLab's fixed padding for strided convs. Defaults to False.
        bn_epsilon: float. Defaults to 1e-3 (xception_arg_scope; 1e-5 in DeepLab's heads).
        bn_momentum: float. Moving-average decay. Defaults to 0.9997.
        use_bias: bool. Conv bias (only the logits layer has one in DeepLab). Defaults to False.
        kernel_regularizer: Optional regularizer of the conv kernel. Defaults to None.

    Returns:
        Tensor (B, H', W', filters): H' = ceil(H / strides) with "same" padding; with
        explicit padding H' = (H + k_eff - 1 - k_eff) // strides + 1 = ceil(H / strides)
        too, but the sampled positions start one pixel earlier on even sizes.

    Example:
    >>> y = conv_bn(images, 32, 3, "entry_flow-conv1_1", strides=2, explicit_padding=True)
    """
    x, padding = _padding(x, kernel_size, dilation_rate, strides, explicit_padding, f"{name}-pad")
    conv_cls = AtrousConv2D if max(as_pair(dilation_rate, "dilation_rate")) > 1 else keras.layers.Conv2D
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        kernel_regularizer=kernel_regularizer,
        name=name,
    )(x)
    x = _batch_norm(x, f"{name}-BatchNorm", bn_epsilon, bn_momentum)
    return _activation(x, activation, f"{name}-act")


def separable_conv_bn(
    x,
    filters,
    name,
    kernel_size=3,
    strides=1,
    dilation_rate=1,
    depth_activation=False,
    activation="relu",
    explicit_padding=False,
    bn_epsilon=1e-3,
    bn_momentum=0.9997,
    kernel_regularizer=None,
):
    """DeepLab's split separable conv: depthwise -> BN [-> act] -> 1x1 pointwise -> BN [-> act].

    The form of ``split_separable_conv2d`` (core/utils.py) and of Xception's
    ``separable_conv2d_same`` with ``regularize_depthwise=False`` (core/xception.py): two
    scopes ``<name>_depthwise`` and ``<name>_pointwise``, each with its own batch norm.
    Adds the layers

    - ``name_depthwise``: `AtrousDepthwiseConv2D` (TF variable ``depthwise_weights``,
      (k, k, in, 1)), ``name_depthwise-BatchNorm`` [, ``name_depthwise-act``],
    - ``name_pointwise``: 1x1 ``Conv2D`` (``weights``, (1, 1, in, filters)),
      ``name_pointwise-BatchNorm`` [, ``name_pointwise-act``],
    - with ``explicit_padding`` and a stride > 1: ``name-pad`` before the depthwise conv
      (``fixed_padding`` then "valid"; otherwise "same").

    The activations are added only with ``depth_activation=True`` (Xception's
    ``activation_fn_in_separable_conv``; DeepLab's ASPP/decoder use it too). Without it the
    caller applies the activation to the input (Xception's middle and entry flows do).
    As in the original, the depthwise kernel is not regularized; ``kernel_regularizer``
    applies to the pointwise kernel.

    Args:
        x: tensor (B, H, W, C) of a Keras functional graph.
        filters: int. Output channels of the pointwise conv.
        name: str. Scope prefix with "/" written as "-", e.g.
            "entry_flow-block1-unit_1-xception_module-separable_conv1".
        kernel_size: int. Depthwise kernel size. Defaults to 3.
        strides: int. Depthwise stride. Defaults to 1.
        dilation_rate: int. Depthwise atrous rate. Defaults to 1.
        depth_activation: bool. Activation after each BN. Defaults to False.
        activation: str or None. The activation used when ``depth_activation``.
            None/"linear" = none. Defaults to "relu".
        explicit_padding: bool. DeepLab's fixed padding for a strided depthwise conv.
            Defaults to False.
        bn_epsilon: float. Defaults to 1e-3 (Xception; the heads use 1e-5).
        bn_momentum: float. Defaults to 0.9997.
        kernel_regularizer: Optional regularizer of the pointwise kernel. Defaults to None.

    Returns:
        Tensor (B, ceil(H / strides), ceil(W / strides), filters).

    Example:
    >>> y = separable_conv_bn(x, 256, "aspp1", dilation_rate=6, depth_activation=True,
    ...                       bn_epsilon=1e-5)
    """
    x, padding = _padding(x, kernel_size, dilation_rate, strides, explicit_padding, f"{name}-pad")
    act = activation if depth_activation else None
    x = AtrousDepthwiseConv2D(
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding=padding,
        use_bias=False,
        depthwise_initializer="he_normal",
        name=f"{name}_depthwise",
    )(x)
    x = _batch_norm(x, f"{name}_depthwise-BatchNorm", bn_epsilon, bn_momentum)
    x = _activation(x, act, f"{name}_depthwise-act")
    x = keras.layers.Conv2D(
        filters,
        1,
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=kernel_regularizer,
        name=f"{name}_pointwise",
    )(x)
    x = _batch_norm(x, f"{name}_pointwise-BatchNorm", bn_epsilon, bn_momentum)
    return _activation(x, act, f"{name}_pointwise-act")


__all__ = ["conv_bn", "fixed_padding_amounts", "separable_conv_bn"]
