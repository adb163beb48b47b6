"""Keras model -> a .tflite of TFLite builtin ops only, for the standalone LiteRT interpreter.

- `exporter`: `export_tflite` / `build_tflite`, the fixed shapes, stateful files;
- `forms`: the time-loop forms (unrolled, WHILE, fused LSTM) and the unrolled form's TF ops;
- `quantize`: the int8 calibration data, checked and batched;
- `flatbuffer`: conversion with builtin ops only, the op check, the metadata entry.
"""

from export.tflite.exporter import build_tflite, export_tflite
from export.tflite.flatbuffer import TFLiteConversionError
from export.tflite.forms import FORMS, choose_form
from export.tflite.quantize import QUANTIZE

__all__ = ["FORMS", "QUANTIZE", "TFLiteConversionError", "build_tflite", "choose_form",
           "export_tflite"]
