"""Operator inspection of TFLite flatbuffers: what a converted model runs, and what it must not.

`kd.export.tflite` reads the op list back from every model it converts (`tflite_ops`),
refuses Flex/custom ops and space-to-batch atrous convolutions (`check_ops`), warns about
ops the int8 quantizer gets wrong (`quantization_warnings`) and stores `summarize_ops` in
the sidecar.
"""

import os

# Ops that betray an atrous convolution lowered the slow way (three ops instead of one
# native dilated CONV_2D / DEPTHWISE_CONV_2D).
FORBIDDEN_OPS = ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")


class TFLiteExportError(RuntimeError):
    """The converted TFLite model violates an export requirement (ops or parity).

    Raised by `kd.export.tflite` before anything is written.
    """


def tflite_ops(model_content):
    """Lists the operators of a TFLite flatbuffer, read from the file itself.

    Args:
        model_content: bytes of a `.tflite` file, or a path (str / `os.PathLike`) to one.

    Returns:
        list of dicts, one per operator in execution order (all subgraphs):
        `{"op": name, "subgraph": i}` plus, for CONV_2D and DEPTHWISE_CONV_2D,
        `"dilation": [h, w]` and `"stride": [h, w]` (ints). Built-in ops carry their
        schema name ("CONV_2D"); custom ops their custom code (Flex ops start with "Flex").

    Raises:
        OSError: the path cannot be read.
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
    """Checks that a converted model uses native TFLite built-in ops only.

    Args:
        ops: list of `{"op": name, ...}` dicts, as returned by `tflite_ops`.

    Raises:
        TFLiteExportError: a Flex or custom op (the model would need the Flex delegate),
            or SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND (an atrous convolution that did not
            become a native dilated CONV_2D / DEPTHWISE_CONV_2D). The message names the
            ops and the fix.
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
            "dilated CONV_2D / DEPTHWISE_CONV_2D. Use kd.layers.AtrousConv2D / "
            "AtrousDepthwiseConv2D (kd.export.tflite traces the latter as one native op), "
            "or call tf.nn.conv2d(..., dilations=r) in a custom layer. "
            "(Pass check=False to write the file anyway.)"
        )


def quantization_warnings(ops, quantization):
    """Warnings about ops that TFLite's quantizer is known to get wrong.

    TFLite's int8 quantization of REVERSE_V2 feeding a convolution is wrong (relative
    error ~0.6 on the convolution output with TF 2.21). The library's models flip
    RGB->BGR with a gather (`kd.layers.ImageNormalization`), so only custom models can
    contain it.

    Args:
        ops: output of `tflite_ops`.
        quantization: None, "float16" or "int8", as passed to `kd.export.tflite`.

    Returns:
        list of str: one message per problem (empty when there is none).
    """
    messages = []
    if quantization == "int8" and any(o["op"] == "REVERSE_V2" for o in ops):
        messages.append(
            "The int8 TFLite model contains REVERSE_V2 (e.g. an RGB->BGR flip done with "
            "keras.ops.flip). TFLite's int8 quantization of REVERSE_V2 feeding a "
            "convolution is wrong (relative error ~0.6 on the conv output, TF 2.21); "
            "express the flip as a gather (keras.ops.take(x, [2, 1, 0], axis=-1)). "
            "Check the parity figures in the sidecar."
        )
    return messages


def summarize_ops(ops):
    """The sidecar's op summary.

    Args:
        ops: output of `tflite_ops`.

    Returns:
        dict: `op_counts` ({op name: count}, sorted by name) and `dilated_convolutions`
        (list of `{"op", "dilation": [h, w]}` for every convolution with a dilation other
        than [1, 1], in execution order).
    """
    counts = {}
    for o in ops:
        counts[o["op"]] = counts.get(o["op"], 0) + 1
    dilated = [
        {"op": o["op"], "dilation": o["dilation"]}
        for o in ops
        if o.get("dilation", [1, 1]) != [1, 1]
    ]
    return {"op_counts": dict(sorted(counts.items())), "dilated_convolutions": dilated}
