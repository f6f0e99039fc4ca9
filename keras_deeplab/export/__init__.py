"""Model export: SavedModel (uint8 serving signature) and TFLite (built-in ops only).

Public API:
    saved_model(model, path, ...): SavedModel + `<path>.json` sidecar (saved_model.py).
    tflite(model, path, quantization=None|"float16"|"int8", ...): `.tflite`
        + `<path>.json` sidecar with ops, size and parity (tflite.py: trace -> convert
        -> inspect ops -> parity gate -> write).
    tflite_ops(model_content_or_path), check_ops(ops), summarize_ops(ops): op inspection
        of a `.tflite` file (ops.py).
    TFLiteExportError: raised when the converted model has Flex/custom ops or
        SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND, or fails the parity gate.
    parity_report(reference_logits, candidate_logits, labels=None): parity.py.
    TFLiteRunner: re-exported from `keras_deeplab.inference.tflite_runtime`, where the
        TFLite runtime lives.

`kd.export.tflite` and `kd.export.saved_model` are the functions; their modules are
`keras_deeplab.export.tflite` / `.saved_model` in `sys.modules` (import names from them
with `from keras_deeplab.export.tflite import trace`).
"""

from keras_deeplab.export.ops import TFLiteExportError, check_ops, summarize_ops, tflite_ops
from keras_deeplab.export.parity import parity_report
from keras_deeplab.export.saved_model import saved_model
from keras_deeplab.export.tflite import tflite
from keras_deeplab.inference.tflite_runtime import TFLiteRunner

__all__ = [
    "TFLiteExportError",
    "TFLiteRunner",
    "check_ops",
    "parity_report",
    "saved_model",
    "summarize_ops",
    "tflite",
    "tflite_ops",
]
