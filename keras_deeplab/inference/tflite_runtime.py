"""The TFLite runtime: a LiteRT interpreter wrapped for one-input, one-output segmentation models.

`kd.inference.Predictor` runs `.tflite` files through `TFLiteRunner`, and
`kd.export.tflite` checks the parity of a freshly converted model with it before writing
the file. This module imports nothing from the rest of the package.
"""

import os

import numpy as np


def make_interpreter(model_path=None, model_content=None, num_threads=None):
    """A LiteRT interpreter (``ai_edge_litert``), or ``tf.lite.Interpreter`` without it.

    Args:
        model_path: str or None. Path of a `.tflite` file.
        model_content: bytes or None. The flatbuffer itself (give this or `model_path`).
        num_threads: int or None. CPU threads of the interpreter. Defaults to None (the
            interpreter's default).

    Returns:
        An interpreter whose tensors are not yet allocated.

    Raises:
        ValueError: from the interpreter, when the file or bytes are not a TFLite model.
    """
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
    """Runs a single-input, single-output TFLite segmentation model on NumPy images.

    Handles dynamic input sizes (the input tensor is resized to each batch and
    re-allocated) and quantized tensors: a uint8/int8 input is quantized with its scale
    and zero point (values rounded and clipped to the dtype's range), a quantized output
    is dequantized to float32.

    Args:
        model: bytes of a `.tflite` model, or a path (str / `os.PathLike`) to one.
        num_threads: int or None. Interpreter threads. Defaults to None.

    Raises:
        ValueError: the model does not have exactly one input and one output.

    Example:
    >>> runner = TFLiteRunner("model.tflite")
    >>> logits = runner(np.zeros((1, 65, 65, 3), np.float32))  # (1, 65, 65, num_classes)
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
                f"{len(inputs)} inputs and {len(outputs)} outputs. Export segmentation "
                "models with kd.export.tflite (images -> logits)."
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self._allocated_shape = tuple(int(v) for v in self._input["shape"])

    @property
    def input_shape_signature(self):
        """Input shape (batch, height, width, channels), -1 for dynamic dimensions."""
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
        """The fixed batch size, or None for a dynamic batch dimension."""
        sig = self.input_shape_signature
        return None if sig[0] < 0 else sig[0]

    @property
    def input_dtype(self):
        """NumPy dtype of the input tensor (float32, or uint8/int8 when quantized)."""
        return np.dtype(self._input["dtype"])

    def input_info(self):
        """``{"name", "dtype", "shape" (-1 = dynamic), "quantization": {"scale", "zero_point"}}``."""
        scale, zero_point = self._input["quantization"]
        return {
            "name": self._input["name"],
            "dtype": self.input_dtype.name,
            "shape": list(self.input_shape_signature),
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    def output_info(self):
        """The same fields as `input_info` for the output tensor."""
        scale, zero_point = self._output["quantization"]
        sig = self._output.get("shape_signature", self._output["shape"])
        return {
            "name": self._output["name"],
            "dtype": np.dtype(self._output["dtype"]).name,
            "shape": [int(v) for v in sig],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    def __call__(self, images):
        """Runs a batch of images.

        Args:
            images: array (B, H, W, 3) of pixel values in [0, 255] (any real dtype; cast to
                float32, then quantized when the input tensor is integer).

        Returns:
            float32 array (B, H', W', C): the model's output (logits at input resolution
            for models written by `kd.export.tflite`), dequantized when quantized.

        Raises:
            ValueError: the model has a fixed height/width or batch size that `images` does
                not match (the message says how to resize or re-export).
        """
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
                f"This TFLite model has a fixed batch size {sig[0]}, got {images.shape[0]}. "
                "Run images in batches of that size, or export with batch_size=None."
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
