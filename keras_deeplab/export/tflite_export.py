"""TFLite export: built-in ops only, native dilated convolutions, parity sidecar."""

import os
import warnings

import numpy as np

from keras_deeplab.export import _common
from keras_deeplab.export.parity import parity_report

QUANTIZATIONS = (None, "float16", "int8")
# Ops that betray an atrous convolution lowered the slow way, or that need
# the Flex (full TensorFlow) delegate.
FORBIDDEN_OPS = ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")


class TFLiteExportError(RuntimeError):
    """The converted TFLite model violates an export requirement."""


def tflite_ops(model_content):
    """Lists the operators of a TFLite flatbuffer.

    Args:
        model_content: bytes of a `.tflite` file, or a path to one.

    Returns:
        list of dicts, one per operator in execution order (all subgraphs):
        `{"op": name, "subgraph": i}` plus, for CONV_2D and
        DEPTHWISE_CONV_2D, `"dilation": [h, w]` and `"stride": [h, w]`.
        Custom ops are named by their custom code (Flex ops start with
        "Flex").
    """
    from tensorflow.lite.python import schema_py_generated as schema

    if isinstance(model_content, (str, os.PathLike)):
        with open(model_content, "rb") as f:
            model_content = f.read()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    builtin_names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }
    opcodes = []
    for code in model.operatorCodes:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode
            if isinstance(custom, bytes):
                custom = custom.decode("utf-8", "replace")
            name = custom or "CUSTOM"
        opcodes.append(name)
    ops = []
    for s, subgraph in enumerate(model.subgraphs or []):
        for op in subgraph.operators or []:
            entry = {"op": opcodes[op.opcodeIndex], "subgraph": s}
            options = op.builtinOptions
            if entry["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and options is not None:
                entry["dilation"] = [int(options.dilationHFactor), int(options.dilationWFactor)]
                entry["stride"] = [int(options.strideH), int(options.strideW)]
            ops.append(entry)
    return ops


def check_ops(ops):
    """Raises `TFLiteExportError` on Flex/custom ops or SPACE_TO_BATCH_ND.

    Args:
        ops: output of `tflite_ops`.
    """
    names = sorted({o["op"] for o in ops})
    flex = [n for n in names if n.startswith("Flex") or n == "CUSTOM"]
    if flex:
        raise TFLiteExportError(
            f"The TFLite model needs non-builtin ops {flex}; only TFLite built-in "
            "ops are allowed (no Flex delegate). Replace the TensorFlow op that "
            "produced them in the model."
        )
    bad = [n for n in names if n in FORBIDDEN_OPS]
    if bad:
        raise TFLiteExportError(
            f"The TFLite model contains {bad}: an atrous convolution was lowered "
            "to SPACE_TO_BATCH_ND + conv + BATCH_TO_SPACE_ND instead of a native "
            "dilated CONV_2D / DEPTHWISE_CONV_2D. Dilated *depthwise* convolutions "
            "only fuse back with a fixed input size: pass input_size=(H, W). "
            "A dilated regular convolution must call tf.nn.conv2d(..., dilations=r). "
            "(Pass check=False to write the file anyway.)"
        )


def summarize_ops(ops):
    """Op-name histogram plus the list of dilated convolutions."""
    counts = {}
    for o in ops:
        counts[o["op"]] = counts.get(o["op"], 0) + 1
    dilated = [
        {"op": o["op"], "dilation": o["dilation"]}
        for o in ops
        if o.get("dilation", [1, 1]) != [1, 1]
    ]
    return {"op_counts": dict(sorted(counts.items())), "dilated_convolutions": dilated}


def _reverse_channels_as_gather(frozen):
    """Rewrites channel-axis ReverseV2 ops of a frozen function as GatherV2.

    TFLite's int8 quantization of REVERSE_V2 feeding a convolution is wrong
    (relative error ~0.6 on the conv output with TF 2.21), and the caffe-style
    RGB->BGR flip of ResNet/VGG normalisation is exactly that. A gather with
    reversed indices computes the same values and quantizes correctly.

    Returns:
        (function, count): the rewritten concrete function (or `frozen`
        unchanged) and the number of ops replaced.
    """
    import tensorflow as tf

    graph_def = frozen.graph.as_graph_def()
    nodes = {n.name: n for n in graph_def.node}
    count = 0
    for node in list(graph_def.node):
        if node.op != "ReverseV2":
            continue
        axis_node = nodes.get(node.input[1].split(":")[0].lstrip("^"))
        if axis_node is None or axis_node.op != "Const":
            continue
        axis = tf.make_ndarray(axis_node.attr["value"].tensor).reshape(-1).tolist()
        out = frozen.graph.get_operation_by_name(node.name).outputs[0]
        rank = out.shape.rank
        if rank is None or len(axis) != 1 or axis[0] % rank != rank - 1 or out.shape[-1] is None:
            continue
        channels = int(out.shape[-1])
        indices = graph_def.node.add()
        indices.name, indices.op = f"{node.name}/kd_gather_indices", "Const"
        indices.attr["dtype"].type = tf.int32.as_datatype_enum
        indices.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(np.arange(channels - 1, -1, -1, dtype=np.int32))
        )
        gather_axis = graph_def.node.add()
        gather_axis.name, gather_axis.op = f"{node.name}/kd_gather_axis", "Const"
        gather_axis.attr["dtype"].type = tf.int32.as_datatype_enum
        gather_axis.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(np.array(rank - 1, dtype=np.int32))
        )
        dtype = node.attr["T"].type
        data = node.input[0]
        controls = [i for i in node.input if i.startswith("^")]
        node.op = "GatherV2"
        del node.input[:]
        node.input.extend([data, indices.name, gather_axis.name, *controls])
        node.attr.clear()
        node.attr["Tparams"].type = dtype
        node.attr["Tindices"].type = tf.int32.as_datatype_enum
        node.attr["Taxis"].type = tf.int32.as_datatype_enum
        node.attr["batch_dims"].i = 0
        count += 1
    if not count:
        return frozen, 0
    input_names = [t.name for t in frozen.inputs]
    output_names = [t.name for t in frozen.outputs]
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
    )
    pruned = wrapped.prune(
        [wrapped.graph.as_graph_element(n) for n in input_names],
        [wrapped.graph.as_graph_element(n) for n in output_names],
    )
    return pruned, count


def _export_mode():
    """Context in which atrous depthwise layers trace as one native dilated op."""
    try:
        from keras_deeplab.layers.atrous_conv import tflite_export_mode
    except ImportError:  # layers without an export mode: nothing to switch
        import contextlib

        return contextlib.nullcontext()
    return tflite_export_mode()


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
    check=True,
    metadata=None,
    verbose=True,
):
    """Converts a segmentation model to TFLite with built-in ops only.

    The model is traced into a concrete function, its variables frozen, and
    converted with `tf.lite.TFLiteConverter` restricted to
    `TFLITE_BUILTINS` (plus `TFLITE_BUILTINS_INT8` for int8) — no Flex ops,
    unlike Keras' `format="litert"`. The op list is read back from the
    flatbuffer; a Flex/custom op or a SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND
    pair (an atrous convolution that is not a native dilated CONV_2D /
    DEPTHWISE_CONV_2D) raises `TFLiteExportError` and nothing is written.

    The TFLite model has one input `images` (float32 [0, 255], or uint8 with
    `uint8_input=True`) of shape (batch_size, H, W, 3) and one output,
    the float32 logits (batch_size, H, W, num_classes) at input resolution.
    A sidecar `<path>.json` records the ops (with dilation factors), the
    file size, the input/output details and parity against the Keras model
    on sample images: max abs diff of logits and probabilities, argmax
    agreement and, when masks are given, the mIoU delta.

    Args:
        model: keras.Model. Segmentation model mapping float32 (B, H, W, 3)
            images in [0, 255] to logits. TensorFlow backend only.
        path: str. Output `.tflite` file.
        quantization: `None` (float32), `"float16"` (float16 weights) or
            `"int8"` (full-integer post-training quantization, calibrated on
            `representative_data`). Defaults to None.
        representative_data: images for int8 calibration: a dataset yielding
            `{"images", "segmentation_masks"}` dicts or `(images, masks)`
            tuples (use the real input pipeline, without augmentation), an
            array (B, H, W, 3), a list of (H, W, 3) arrays (sizes may differ
            for a dynamic input size), or one in-memory `(images, masks)` /
            dict batch. Required for int8; also the default source of parity
            images.
        input_size: (height, width) for a fixed input size, or None for a
            dynamic one (resize the input tensor before allocating). Calibration
            and parity images are resized bilinearly to a fixed size. Defaults
            to None.
        uint8_input: bool. Take uint8 pixels instead of float32. With int8
            quantization the input tensor itself is uint8 (quantization
            parameters from calibration, normally scale 1 / zero point 0);
            otherwise a CAST op is added. Defaults to False.
        batch_size: int or None. Fixed batch dimension. Defaults to 1.
        num_calibration_images: int. Images used to calibrate int8. Defaults
            to 100.
        sample_data: images (and masks) for the parity check, same forms as
            `representative_data`. Defaults to None: the first images of
            `representative_data`, else synthetic images.
        num_parity_images: int. Defaults to 4.
        check: bool. Fail on Flex ops or SPACE_TO_BATCH_ND. Defaults to True.
        metadata: optional dict stored in the sidecar.
        verbose: bool. Print a one-line summary. Defaults to True.

    Returns:
        dict: the sidecar content (also written to `<path>.json`).

    Example:

    ```python
    train = kd.data.synthetic("train", num_images=64, image_size=(129, 129), batch_size=8)
    kd.export.tflite(model, "dlv3p_int8.tflite", quantization="int8",
                     representative_data=train, input_size=(129, 129))
    ```
    """
    _common.require_tensorflow_backend("kd.export.tflite")
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data to calibrate activation "
            "ranges: pass the (non-augmented) training or validation dataset."
        )
    if input_size is not None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise ValueError(f"input_size must be (height, width), got {input_size!r}.")
        input_size = (int(input_size[0]), int(input_size[1]))
    path = os.fspath(path)
    _common.model_num_classes(model)  # fails early on an unbuilt model

    h, w = input_size if input_size is not None else (None, None)
    cast_in_graph = uint8_input and quantization != "int8"
    in_dtype = tf.uint8 if cast_in_graph else tf.float32

    @tf.function
    def serve(images):
        x = tf.cast(images, tf.float32)
        return {"logits": tf.cast(model(x, training=False), tf.float32)}

    with _export_mode():
        concrete = serve.get_concrete_function(
            tf.TensorSpec([batch_size, h, w, 3], in_dtype, name="images")
        )
    frozen = convert_variables_to_constants_v2(concrete)
    rewrites = {}
    if quantization == "int8":
        frozen, count = _reverse_channels_as_gather(frozen)
        if count:
            rewrites["ReverseV2 (channel axis) -> GatherV2"] = count
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False

    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        calib_images, _ = _common.take_images(representative_data, num_calibration_images)
        if input_size is not None:
            calib_images = [_common.resize_image(im, input_size) for im in calib_images]

        def representative_dataset():
            for image in calib_images:
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
        content = converter.convert()
    ops = tflite_ops(content)
    if check:
        check_ops(ops)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)

    if quantization == "int8" and any(o["op"] == "REVERSE_V2" for o in ops):
        warnings.warn(
            "The int8 TFLite model contains REVERSE_V2 (e.g. an RGB->BGR flip done with "
            "keras.ops.flip). TFLite's int8 quantization of REVERSE_V2 feeding a "
            "convolution is wrong (relative error ~0.6 on the conv output, TF 2.21); "
            "express the flip as a gather (keras.ops.take(x, [2, 1, 0], axis=-1)). "
            "Check the parity figures in the sidecar.",
            stacklevel=2,
        )

    # Parity against the Keras model.
    images, labels = _common.take_images(
        sample_data if sample_data is not None else representative_data,
        num_parity_images,
    )
    source = "sample_data" if sample_data is not None else "representative_data"
    if not images:
        size = input_size or (67, 91)
        images = _common.random_images(num_parity_images, size, seed=0)
        source = "synthetic"
    if input_size is not None:
        images = [_common.resize_image(im, input_size) for im in images]
        if labels is not None:
            labels = [_common.resize_labels(lb, input_size) for lb in labels]
    runner = TFLiteRunner(content)
    ref_logits, cand_logits = [], []
    import keras

    for image in images:
        pixels = np.clip(np.round(image), 0, 255)[None].astype(np.float32)
        ref = keras.ops.convert_to_numpy(model(pixels, training=False))[0]
        cand = runner(np.repeat(pixels, batch_size or 1, axis=0))[0]
        ref_logits.append(ref)
        cand_logits.append(cand)
    parity = parity_report(ref_logits, cand_logits, labels)
    parity["images_source"] = source
    parity["image_sizes"] = [list(im.shape[:2]) for im in images]

    info = _common.provenance(model, "tflite", metadata)
    info.update(
        {
            "path": path,
            "size_bytes": os.path.getsize(path),
            "quantization": quantization or "float32",
            "input": runner.input_info(),
            "output": runner.output_info(),
            "dynamic_input_size": input_size is None,
            "graph_rewrites": rewrites,
            "ops": summarize_ops(ops),
            "parity": parity,
        }
    )
    if quantization == "int8":
        info["calibration_images"] = len(calib_images)
    sidecar = _common.write_sidecar(path, info)
    if verbose:
        print(
            f"TFLite ({info['quantization']}) written to {path} "
            f"({info['size_bytes'] / 1e6:.2f} MB, {len(ops)} ops, "
            f"{len(info['ops']['dilated_convolutions'])} dilated convs); parity: "
            f"max |dlogit| = {parity['max_abs_diff_logits']:.2e}, argmax agreement = "
            f"{parity['argmax_agreement']:.4f}; sidecar {sidecar}"
        )
    return info


def make_interpreter(model_path=None, model_content=None, num_threads=None):
    """LiteRT interpreter (`ai_edge_litert`), falling back to `tf.lite`."""
    kwargs = {"model_path": model_path, "model_content": model_content}
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the environment
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(**kwargs)


class TFLiteRunner:
    """Runs a single-input single-output TFLite segmentation model.

    Handles dynamic input sizes (the input tensor is resized to each batch)
    and quantized inputs/outputs (values are quantized with the tensor's
    scale and zero point, outputs dequantized).

    Args:
        model: bytes of a `.tflite` model or a path to one.
        num_threads: optional int for the interpreter.
    """

    def __init__(self, model, num_threads=None):
        if isinstance(model, (bytes, bytearray)):
            self.interpreter = make_interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            self.interpreter = make_interpreter(model_path=os.fspath(model), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"Expected a TFLite model with 1 input and 1 output, found "
                f"{len(inputs)} inputs and {len(outputs)} outputs."
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self._allocated_shape = tuple(int(v) for v in self._input["shape"])

    @property
    def input_shape_signature(self):
        """Input shape with -1 for dynamic dimensions."""
        sig = self._input.get("shape_signature", self._input["shape"])
        return tuple(int(v) for v in sig)

    @property
    def fixed_input_size(self):
        """(height, width) when the model has a fixed spatial size, else None."""
        sig = self.input_shape_signature
        if sig[1] < 0 or sig[2] < 0:
            return None
        return (sig[1], sig[2])

    @property
    def fixed_batch_size(self):
        sig = self.input_shape_signature
        return None if sig[0] < 0 else sig[0]

    @property
    def input_dtype(self):
        return np.dtype(self._input["dtype"])

    def input_info(self):
        scale, zero_point = self._input["quantization"]
        return {
            "name": self._input["name"],
            "dtype": self.input_dtype.name,
            "shape": list(self.input_shape_signature),
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    def output_info(self):
        scale, zero_point = self._output["quantization"]
        sig = self._output.get("shape_signature", self._output["shape"])
        return {
            "name": self._output["name"],
            "dtype": np.dtype(self._output["dtype"]).name,
            "shape": [int(v) for v in sig],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    def __call__(self, images):
        """Runs float32 images in [0, 255] (B, H, W, 3); returns float32 logits."""
        images = np.asarray(images, np.float32)
        sig = self.input_shape_signature
        for axis, name in ((1, "height"), (2, "width")):
            if sig[axis] >= 0 and images.shape[axis] != sig[axis]:
                raise ValueError(
                    f"This TFLite model has a fixed input size "
                    f"{sig[1]}x{sig[2]} (HxW) but got {name} {images.shape[axis]} "
                    f"(image {images.shape[1]}x{images.shape[2]}). Resize the "
                    f"image to {sig[1]}x{sig[2]}, or export with input_size=None "
                    "for a dynamic size."
                )
        if sig[0] >= 0 and images.shape[0] != sig[0]:
            raise ValueError(
                f"This TFLite model has a fixed batch size {sig[0]}, got {images.shape[0]}."
            )
        if tuple(images.shape) != self._allocated_shape:
            self.interpreter.resize_tensor_input(
                self._input["index"], list(images.shape), strict=True
            )
            self.interpreter.allocate_tensors()
            self._allocated_shape = tuple(images.shape)
        dtype = self.input_dtype
        if dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            if scale > 0:
                q = np.round(images / scale + zero_point)
            else:
                q = np.round(images)
            info = np.iinfo(dtype)
            images = np.clip(q, info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], images)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        if out.dtype != np.float32:
            scale, zero_point = self._output["quantization"]
            out = (out.astype(np.float32) - zero_point) * (scale if scale > 0 else 1.0)
        return np.array(out, dtype=np.float32, copy=True)
