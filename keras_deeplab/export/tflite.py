"""TFLite export: built-in ops only, native dilated convolutions, a parity gate and a sidecar.

`tflite()` is a pipeline of named steps, each a small function of this module:

    trace        the model -> a frozen concrete function (variables as constants), traced
                 with the model's dilated depthwise layers set to emit one native op
                 (`native_dilated_depthwise`)
    convert      -> TFLite flatbuffer bytes (float32, float16 weights or full int8)
    inspect_ops  -> the op list read back from the bytes; Flex/custom ops and
                 space-to-batch atrous convolutions raise `TFLiteExportError`
    parity_gate  -> the TFLite interpreter against the Keras model on sample images;
                 below `min_argmax_agreement` raises `TFLiteExportError`
    write        -> the `.tflite` file and its `<path>.json` sidecar

Nothing is written unless every step before `write` passed.
"""

import contextlib
import os
import warnings

import numpy as np

from keras_deeplab.data.batches import take_images
from keras_deeplab.export import _common
from keras_deeplab.export.ops import (
    TFLiteExportError,
    check_ops,
    quantization_warnings,
    summarize_ops,
    tflite_ops,
)
from keras_deeplab.export.parity import parity_report
from keras_deeplab.inference.tflite_runtime import TFLiteRunner
from keras_deeplab.layers.atrous_conv import AtrousDepthwiseConv2D
from keras_deeplab.provenance import atomic_path
from keras_deeplab.utils import main_logits, model_num_classes, resize_bilinear, resize_nearest

QUANTIZATIONS = (None, "float16", "int8")
# Parity images when neither sample_data nor representative_data is given (dynamic size).
_SYNTHETIC_PARITY_SIZE = (67, 91)


def tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    input_size=None,
    uint8_input=False,
    batch_size=1,
    num_calibration_images=100,
    sample_data=None,
    num_parity_images=4,
    min_argmax_agreement=None,
    check=True,
    metadata=None,
    verbose=True,
):
    """Converts a segmentation model to TFLite with built-in ops only.

    The model is traced into a concrete function, its variables frozen, and
    converted with `tf.lite.TFLiteConverter` restricted to `TFLITE_BUILTINS`
    (plus `TFLITE_BUILTINS_INT8` for int8): no Flex ops, unlike Keras'
    `format="litert"`. Every atrous convolution becomes one native dilated
    CONV_2D / DEPTHWISE_CONV_2D, at fixed and dynamic input sizes. The op list is
    read back from the flatbuffer, and the converted model is run in the TFLite
    interpreter against the Keras model on sample images before anything is
    written.

    The TFLite model has one input `images` of shape (batch_size, H, W, 3):
    float32 pixels in [0, 255], or uint8 with `uint8_input=True`; and one output,
    float32 logits (batch_size, H, W, num_classes) at input resolution (the main
    logits of a model with an auxiliary head). H and W are `input_size`, or
    dynamic (-1: resize the interpreter's input tensor before allocating; see
    `kd.inference.tflite_runtime.TFLiteRunner`).

    The sidecar `<path>.json` is a `keras_deeplab.provenance` record (kind
    "tflite") with `path`, `size_bytes`, `quantization` ("float32", "float16" or
    "int8"), `input` / `output` tensor details, `dynamic_input_size`, `ops`
    (op counts and every dilated convolution with its factors), `parity`
    (`kd.export.parity_report` fields: max abs diff of logits and probabilities,
    argmax agreement and, when masks are given, the mIoU delta; plus
    `images_source` and `image_sizes`), `calibration_images` (int8), the model
    and `metadata`.

    Args:
        model: keras.Model. Segmentation model mapping float32 (B, H, W, 3)
            images in [0, 255] to logits (B, H, W, C) (or a `{"logits", ...}`
            dict). Built (it has an output shape). TensorFlow backend only.
        path: str or os.PathLike. Output `.tflite` file; its folder is created.
        quantization: None (float32), `"float16"` (float16 weights, float32
            compute) or `"int8"` (full-integer post-training quantization of
            weights and activations, calibrated on `representative_data`).
            Defaults to None.
        representative_data: images for int8 calibration: a dataset yielding
            `{"images", "segmentation_masks"}` dicts or `(images, masks)` tuples
            (use the real input pipeline, without augmentation), an array
            (B, H, W, 3) in [0, 255], a list of (H, W, 3) arrays (sizes may
            differ for a dynamic input size), or one in-memory `(images, masks)`
            / dict batch. Required for int8; also the default source of parity
            images. Defaults to None.
        input_size: (height, width) ints for a fixed input size, or None for a
            dynamic one. Calibration and parity images are resized to a fixed
            size (bilinear; masks nearest). Defaults to None.
        uint8_input: bool. Take uint8 pixels instead of float32. With int8
            quantization the input tensor itself is uint8 (quantization
            parameters from calibration, normally scale 1 / zero point 0);
            otherwise a CAST op is added. Defaults to False.
        batch_size: int >= 1, or None for a dynamic batch. Defaults to 1.
        num_calibration_images: int. Images used to calibrate int8. Defaults
            to 100.
        sample_data: images (and masks) for the parity check, same forms as
            `representative_data`. Defaults to None: the first images of
            `representative_data`, else synthetic 67x91 images (or `input_size`).
        num_parity_images: int >= 1. Defaults to 4.
        min_argmax_agreement: float in [0, 1] or None. The parity gate: the
            export fails when the fraction of pixels whose TFLite argmax equals the
            Keras argmax is below this. Defaults to None (recorded, not enforced).
        check: bool. Fail on Flex/custom ops or SPACE_TO_BATCH_ND /
            BATCH_TO_SPACE_ND. Defaults to True.
        metadata: dict or None. Stored under "metadata" in the sidecar.
            Defaults to None.
        verbose: bool. Print a one-line summary. Defaults to True.

    Returns:
        dict: the sidecar record (also written to `<path>.json`).

    Raises:
        RuntimeError: Keras does not run on the TensorFlow backend.
        ValueError: an unknown `quantization`, int8 without
            `representative_data`, a malformed `input_size`, `batch_size`,
            `num_parity_images` or `min_argmax_agreement`, a model whose number of
            classes is unknown, or data that yields no images.
        TFLiteExportError: the converted model has Flex/custom ops or
            space-to-batch atrous convolutions (with `check=True`), or fails the
            parity gate. Nothing is written then.

    Example:

    ```python
    # `model`: a trained segmentation model, e.g. kd.models.DeepLabV3Plus(num_classes=6).
    calib = kd.data.synthetic("val", num_images=16, image_size=65, batch_size=4)
    info = kd.export.tflite(model, "dlv3p_int8.tflite", quantization="int8",
                            representative_data=calib, input_size=(65, 65),
                            uint8_input=True, verbose=False)
    info["input"]["dtype"]  # 'uint8'; info["parity"] compares it with the Keras model
    ```
    """
    _common.require_tensorflow_backend("kd.export.tflite")
    input_size, batch_size = _check_arguments(
        quantization, representative_data, input_size, batch_size, num_parity_images,
        min_argmax_agreement,
    )
    path = os.fspath(path)
    model_num_classes(model)  # fails early on an unbuilt model
    model = _float32_copy(model)  # TFLite has no bfloat16 kernels

    frozen = trace(model, input_size, batch_size, uint8=uint8_input and quantization != "int8")
    calibration = None
    if quantization == "int8":
        calibration, _ = take_images(representative_data, num_calibration_images)
        calibration = _resized(calibration, input_size)
    content = convert(frozen, model, quantization, calibration, batch_size, uint8_input)
    ops = inspect_ops(content, quantization, check)
    images, labels, source = parity_images(
        sample_data, representative_data, num_parity_images, input_size
    )
    parity, runner = parity_gate(model, content, images, labels, batch_size, min_argmax_agreement)
    parity["images_source"] = source

    record = _common.export_record(
        "tflite",
        model,
        metadata,
        path=path,
        size_bytes=len(content),
        quantization=quantization or "float32",
        input=runner.input_info(),
        output=runner.output_info(),
        dynamic_input_size=input_size is None,
        ops=summarize_ops(ops),
        parity=parity,
        **({"calibration_images": len(calibration)} if calibration is not None else {}),
    )
    sidecar = write(path, content, record)
    if verbose:
        print(
            f"TFLite ({record['quantization']}) written to {path} "
            f"({record['size_bytes'] / 1e6:.2f} MB, {len(ops)} ops, "
            f"{len(record['ops']['dilated_convolutions'])} dilated convs); parity: "
            f"max |dlogit| = {parity['max_abs_diff_logits']:.2e}, argmax agreement = "
            f"{parity['argmax_agreement']:.4f}; sidecar {sidecar}"
        )
    return record


def _float32_copy(model):
    """``model`` itself under a float32 policy, else its float32 copy (same config and
    weights): a model built under "mixed_bfloat16" (`kd.training.set_precision`, "auto" on
    bf16 CPUs) traces bfloat16 ops that the TFLite converter refuses."""
    if getattr(model, "dtype_policy", None) is None or model.dtype_policy.name == "float32":
        return model
    config = model.get_config()
    if "dtype" not in config:  # not a layer-style config: converted as it is
        return model
    config["dtype"] = "float32"
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _check_arguments(quantization, representative_data, input_size, batch_size,
                     num_parity_images, min_argmax_agreement):
    """Validates `tflite()`'s arguments; returns `(input_size, batch_size)` normalised."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data to calibrate activation "
            "ranges: pass the (non-augmented) training or validation dataset."
        )
    if input_size is not None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise ValueError(f"input_size must be (height, width), got {input_size!r}.")
        input_size = (int(input_size[0]), int(input_size[1]))
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
        batch_size = int(batch_size)
    if int(num_parity_images) < 1:
        raise ValueError(f"num_parity_images must be >= 1, got {num_parity_images!r}.")
    if min_argmax_agreement is not None and not 0.0 <= float(min_argmax_agreement) <= 1.0:
        raise ValueError(
            f"min_argmax_agreement must be in [0, 1] or None, got {min_argmax_agreement!r}."
        )
    return input_size, batch_size


@contextlib.contextmanager
def native_dilated_depthwise(model):
    """Sets `native_dilation = True` on every `AtrousDepthwiseConv2D` of `model`.

    While the `with` block runs, tracing the model emits each dilated depthwise
    convolution as one `DepthwiseConv2dNative` op with dilations (which the TFLite
    converter maps to a dilated DEPTHWISE_CONV_2D at any input size) instead of
    Keras' space-to-batch form. TensorFlow's CPU kernels cannot execute that op, so
    only trace inside the block; each layer's previous value is restored on exit,
    also on error. The switch belongs to the model's layers: other models are not
    affected, but do not run the same model in another thread meanwhile.

    Args:
        model: keras.Model (nested models and layers are searched).

    Yields:
        list of the `AtrousDepthwiseConv2D` layers switched.
    """
    # Keras has no public recursive walk over sublayers; `_flatten_layers` is the one
    # `Layer.losses` itself uses (it reaches layers held inside custom layers too).
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, AtrousDepthwiseConv2D)
    ]
    previous = [layer.native_dilation for layer in layers]
    try:
        for layer in layers:
            layer.native_dilation = True
        yield layers
    finally:
        for layer, value in zip(layers, previous):
            layer.native_dilation = value


def trace(model, input_size=None, batch_size=1, uint8=False):
    """Step 1: traces `model` for export and freezes its variables into constants.

    Args:
        model: keras.Model mapping float32 (B, H, W, 3) images in [0, 255] to logits.
        input_size: (height, width) or None for a dynamic size. Defaults to None.
        batch_size: int or None (dynamic). Defaults to 1.
        uint8: bool. The input is uint8 (cast to float32 in the graph). Defaults to False.

    Returns:
        A frozen `ConcreteFunction`: `images` (batch_size, H, W, 3) -> `{"logits":
        float32 (batch_size, H, W, C)}`.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function
    def serve(images):
        x = tf.cast(images, tf.float32)
        return {"logits": tf.cast(main_logits(model(x, training=False)), tf.float32)}

    h, w = input_size if input_size is not None else (None, None)
    spec = tf.TensorSpec([batch_size, h, w, 3], tf.uint8 if uint8 else tf.float32, name="images")
    with native_dilated_depthwise(model):
        concrete = serve.get_concrete_function(spec)
    return convert_variables_to_constants_v2(concrete)


def convert(frozen, model, quantization=None, calibration_images=None, batch_size=1,
            uint8_input=False):
    """Step 2: converts a frozen function with TFLite built-in ops only.

    Args:
        frozen: the output of `trace`.
        model: the traced keras.Model (kept alive by the converter).
        quantization: None, "float16" or "int8". Defaults to None.
        calibration_images: list of float32 (H, W, 3) images in [0, 255] at the traced
            size; required for int8. Defaults to None.
        batch_size: int or None: the traced batch size. Defaults to 1.
        uint8_input: bool. With int8: the input tensor is uint8. Defaults to False.

    Returns:
        bytes: the TFLite flatbuffer.

    Raises:
        ValueError: int8 without calibration images.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if not calibration_images:
            raise ValueError("int8 conversion needs calibration_images.")

        def representative_dataset():
            for image in calibration_images:
                yield [np.repeat(image[None], batch_size or 1, axis=0).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if uint8_input:
            converter.inference_input_type = tf.uint8
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def inspect_ops(content, quantization=None, check=True):
    """Step 3: reads the op list back from the flatbuffer and checks it.

    Args:
        content: bytes of the converted model.
        quantization: None, "float16" or "int8" (for `quantization_warnings`).
        check: bool. Raise on forbidden ops. Defaults to True.

    Returns:
        The `kd.export.tflite_ops` list.

    Raises:
        TFLiteExportError: see `kd.export.check_ops` (only with `check=True`).
    """
    ops = tflite_ops(content)
    if check:
        check_ops(ops)
    for message in quantization_warnings(ops, quantization):
        warnings.warn(message, stacklevel=3)
    return ops


def parity_images(sample_data, representative_data, num_images, input_size=None):
    """The images (and masks) the parity gate runs on.

    Args:
        sample_data, representative_data: see `tflite`; the first that is not None is used.
        num_images: int. At most this many images.
        input_size: (height, width) or None. Images are resized to it (bilinear, masks
            nearest).

    Returns:
        (images, labels, source): float32 (H, W, 3) arrays in [0, 255], int32 (H, W) masks
        or None, and "sample_data", "representative_data" or "synthetic".
    """
    data, source = (sample_data, "sample_data") if sample_data is not None else (
        representative_data, "representative_data")
    images, labels = take_images(data, num_images)
    if not images:
        images = _common.random_images(num_images, input_size or _SYNTHETIC_PARITY_SIZE, seed=0)
        source = "synthetic"
    images = _resized(images, input_size)
    if labels is not None and input_size is not None:
        labels = [resize_nearest(lb, input_size) for lb in labels]
    return images, labels, source


def parity_gate(model, content, images, labels=None, batch_size=1, min_argmax_agreement=None):
    """Step 4: runs the converted model in the TFLite interpreter against the Keras model.

    Each image is rounded and clipped to integer pixels in [0, 255], run through both
    models (repeated to `batch_size` for TFLite; the first output is compared) and
    compared with `kd.export.parity_report`.

    Args:
        model: the Keras model.
        content: bytes of the converted model.
        images: list of float32 (H, W, 3) images in [0, 255] of the model's input size.
        labels: list of int (H, W) masks or None (for the mIoU delta).
        batch_size: int or None: the exported batch size. Defaults to 1.
        min_argmax_agreement: float in [0, 1] or None. Defaults to None.

    Returns:
        (parity, runner): the `parity_report` dict plus `image_sizes`, and the
        `TFLiteRunner` holding the model.

    Raises:
        TFLiteExportError: argmax agreement below `min_argmax_agreement`.
    """
    import keras

    runner = TFLiteRunner(content)
    reference, candidate = [], []
    for image in images:
        pixels = np.clip(np.round(image), 0, 255)[None].astype(np.float32)
        reference.append(keras.ops.convert_to_numpy(main_logits(model(pixels, training=False)))[0])
        candidate.append(runner(np.repeat(pixels, batch_size or 1, axis=0))[0])
    parity = parity_report(reference, candidate, labels)
    parity["image_sizes"] = [list(im.shape[:2]) for im in images]
    if min_argmax_agreement is not None and parity["argmax_agreement"] < min_argmax_agreement:
        raise TFLiteExportError(
            f"The converted TFLite model's argmax agrees with the Keras model on "
            f"{parity['argmax_agreement']:.4f} of the pixels of {len(images)} parity images, "
            f"below min_argmax_agreement={min_argmax_agreement}. Nothing was written. For "
            "int8, calibrate on more (and representative, non-augmented) images; or lower "
            "the threshold."
        )
    return parity, runner


def write(path, content, record):
    """Step 5: writes the `.tflite` file and its `<path>.json` sidecar, each atomically.

    Args:
        path: str. The `.tflite` path; its folder is created.
        content: bytes of the model.
        record: the sidecar dict.

    Returns:
        str: the sidecar's path.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return _common.write_sidecar(path, record)


def _resized(images, size):
    """Bilinear resize of each (H, W, 3) image to `size` (None: unchanged)."""
    if size is None:
        return images
    return [resize_bilinear(image, size) for image in images]
