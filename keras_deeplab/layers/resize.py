"""Resize a feature map to the spatial size of a reference tensor (works with unknown H/W)."""

import keras

from keras_deeplab.utils import register


def _check(interpolation, align_corners):
    if interpolation not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(
            f"interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}."
        )
    if align_corners and interpolation != "bilinear":
        raise ValueError(
            f"align_corners=True is only defined for bilinear resizing (got interpolation="
            f"{interpolation!r}); use interpolation='bilinear' or align_corners=False.")


def _resize_align_corners_jax(x, height, width):
    import jax
    import jax.numpy as jnp

    in_h, in_w = x.shape[1], x.shape[2]
    if in_h == 1 or in_w == 1 or height == 1 or width == 1:
        # One input row (broadcast) or one output row (the first input row): the scale
        # (out - 1) / (in - 1) is undefined; gather and interpolate instead.
        return _resize_align_corners_gather(x, height, width)
    scale = jnp.array([(height - 1) / (in_h - 1), (width - 1) / (in_w - 1)], jnp.float32)
    # scale_and_translate maps output centre (i + 0.5) to input centre (i + 0.5 - t) / s;
    # align_corners wants input index i / s, hence t = 0.5 * (1 - s).
    out = jax.image.scale_and_translate(
        x, (x.shape[0], height, width, x.shape[3]), (1, 2), scale, 0.5 * (1.0 - scale),
        method="linear", antialias=False)
    return out.astype(x.dtype)


def _corner_indices(size_in, size_out):
    """(lower, upper, weight) of each output index i at input position i * (in-1)/(out-1)."""
    import numpy as np

    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    pos = np.arange(size_out) * scale
    lower = np.minimum(np.floor(pos).astype("int32"), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, (pos - lower).astype("float32")


def _resize_align_corners_gather(x, height, width):
    """Align-corners bilinear with static sizes from keras.ops gathers (any backend)."""
    for axis, size in ((1, height), (2, width)):
        lower, upper, weight = _corner_indices(x.shape[axis], size)
        shape = [1, 1, 1, 1]
        shape[axis] = size
        weight = keras.ops.cast(weight.reshape(shape), x.dtype)
        a = keras.ops.take(x, lower, axis=axis)
        b = keras.ops.take(x, upper, axis=axis)
        x = a + (b - a) * weight
    return x


def resize_to(x, height, width, interpolation="bilinear", align_corners=False):
    """Resizes NHWC ``x`` to ``(height, width)``; sizes may be symbolic tensors on TF.

    ``keras.ops.image.resize`` wants Python ints, which an unknown H/W under
    ``tf.function`` tracing (SavedModel / TFLite with dynamic size) is not, so the
    TensorFlow backend calls ``tf.image.resize`` with the dynamic shape instead.

    Bilinear uses half-pixel centres (``align_corners=False``, the default) or, with
    ``align_corners=True``, the corner-aligned grid of TF1's ``resize_bilinear`` that the
    TensorFlow DeepLab models use: output pixel ``i`` samples input position
    ``i * (in - 1) / (out - 1)`` (position 0 when ``out == 1``), so the corner pixels of
    input and output coincide. Backends: TensorFlow ``ResizeBilinear(align_corners=True)``
    (TFLite ``RESIZE_BILINEAR`` with ``align_corners=True``, dynamic sizes allowed), JAX
    ``jax.image.scale_and_translate`` with scale ``(out - 1) / (in - 1)``, PyTorch
    ``interpolate(mode="bilinear", align_corners=True)``.

    Args:
        x: tensor (B, H, W, C).
        height, width: int or scalar int tensor (TensorFlow only). Output size.
        interpolation: str. "bilinear", "nearest" or "bicubic". Defaults to "bilinear".
        align_corners: bool. Corner-aligned bilinear (see above). Defaults to False.

    Returns:
        Tensor (B, height, width, C) of ``x``'s dtype.

    Raises:
        ValueError: unknown ``interpolation``, or ``align_corners=True`` with anything but
            "bilinear".
    """
    _check(interpolation, align_corners)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        size = tf.stack([height, width])
        if align_corners:
            out = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
        else:
            out = tf.image.resize(x, size, method=interpolation)
        return tf.cast(out, x.dtype)
    height, width = int(height), int(width)
    if align_corners:
        if backend == "jax":
            return _resize_align_corners_jax(x, height, width)
        if backend == "torch":
            import torch

            y = torch.nn.functional.interpolate(
                x.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                align_corners=True)
            return y.permute(0, 2, 3, 1).contiguous()
        return _resize_align_corners_gather(x, height, width)
    return keras.ops.image.resize(
        x, (height, width), interpolation=interpolation, data_format="channels_last"
    )


@register
class ResizeLike(keras.layers.Layer):
    """Resizes the first input to the height and width of the second (NHWC).

    Args:
        interpolation: str. "bilinear" for features and logits, "nearest" for masks.
            Defaults to "bilinear".
        align_corners: bool. Bilinear on the corner-aligned grid of TF1's
            ``resize_bilinear(align_corners=True)`` (the TensorFlow DeepLab models);
            False uses half-pixel centres (``tf.image.resize``, torchvision). See
            `resize_to`. Defaults to False.

    Raises:
        ValueError: unknown ``interpolation``, or ``align_corners=True`` with anything but
            "bilinear".

    Example:
    >>> up = ResizeLike()([logits, images])   # logits at the image resolution
    >>> up = ResizeLike(align_corners=True)([logits, images])   # as TF DeepLab
    """

    def __init__(self, interpolation="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        _check(interpolation, align_corners)
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        shape = keras.ops.shape(reference)  # dynamic dims come back as tensors on TF
        return resize_to(x, shape[1], shape[2], self.interpolation, self.align_corners)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation, align_corners=self.align_corners)
        return config
