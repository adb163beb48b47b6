"""Keras RNN -> builtin-only TFLite and native-op ONNX, with parity proven in the real runtimes.

Importing this package does not import TensorFlow; `export_tflite`, `export_onnx` and `verify`
import what they need when called, and `export.runtime` never needs TensorFlow at all.
"""

from export.metadata import vocabulary_metadata
from export.onnx import export_onnx
from export.parity import ParityReport, format_table, verify
from export.tflite import export_tflite

__all__ = [
    "export_onnx",
    "export_tflite",
    "format_table",
    "ParityReport",
    "verify",
    "vocabulary_metadata",
]
