"""Running exported files with NumPy and the runtime only: no TensorFlow, no Keras.

This is what a device or a service imports. `load("model.tflite")` uses the standalone LiteRT
interpreter (`ai_edge_litert`, no Flex delegate); `load("model.onnx")` uses ONNX Runtime. Both
give the same small interface: `run(inputs) -> outputs`, the expected input shape and dtype,
and the metadata written at export (the vocabulary, so outputs can be decoded).

- `loaders`: `load`, `TFLiteModel`, `ONNXModel`;
- `metadata`: the fields a file carries, checked; `inputs`: inputs checked before a run;
- `checks`: a file from anyone checked before its runtime opens it;
- `generation`: `StepModel` runs a streaming step model (`export.streaming`) with the state carried
  by the caller, and `generate` continues a prompt greedily with one, symbol by symbol;
- `translation`: `Translator` decodes with an exported seq2seq encoder and decoder step.
"""

from export.runtime.checks import ModelFileError
from export.runtime.generation import StepModel, generate
from export.runtime.loaders import ONNXModel, TFLiteModel, load, read_metadata
from export.runtime.metadata import (
    FORMS_METADATA,
    MAIN_INPUT,
    MAIN_OUTPUT,
    MAX_TRANSLATION_LENGTH,
    RESET_SIGNATURE,
    RUNTIMES_METADATA,
    STATEFUL_METADATA,
    TFLITE_METADATA_NAME,
    check_vocabulary_size,
    checked_metadata,
    metadata_int,
    operator_names,
    state_input_name,
    state_output_name,
    vocabulary_field,
)
from export.runtime.translation import Translator

__all__ = [
    "FORMS_METADATA", "MAIN_INPUT", "MAIN_OUTPUT", "MAX_TRANSLATION_LENGTH", "RESET_SIGNATURE",
    "RUNTIMES_METADATA",
    "STATEFUL_METADATA", "TFLITE_METADATA_NAME", "ModelFileError", "ONNXModel", "StepModel",
    "TFLiteModel", "Translator", "check_vocabulary_size", "checked_metadata", "generate", "load",
    "metadata_int", "operator_names", "read_metadata", "state_input_name", "state_output_name",
    "vocabulary_field",
]
