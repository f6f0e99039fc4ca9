"""Model export: SavedModel (uint8 serving signature) and TFLite (built-in ops only).

Public API:
    saved_model(model, path, ...): SavedModel + `<path>.json` sidecar.
    tflite(model, path, quantization=None|"float16"|"int8", ...): `.tflite`
        + `<path>.json` sidecar with ops, size and parity.
    tflite_ops(model_content_or_path): operator list of a `.tflite` file.
    TFLiteExportError: raised when the converted model has Flex ops or
        SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND.
"""

from keras_deeplab.export.parity import parity_report
from keras_deeplab.export.saved_model_export import saved_model
from keras_deeplab.export.tflite_export import (
    TFLiteExportError,
    TFLiteRunner,
    check_ops,
    tflite,
    tflite_ops,
)

__all__ = [
    "TFLiteExportError",
    "TFLiteRunner",
    "check_ops",
    "parity_report",
    "saved_model",
    "tflite",
    "tflite_ops",
]
