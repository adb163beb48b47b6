"""What an exported file carries besides its graph, read without TensorFlow: the metadata
fields (each checked: a file may come from anyone), the state inputs' names, and the
operators and tensors of a .tflite flatbuffer.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from export.runtime.checks import (
    ModelFileError,
)

TFLITE_METADATA_NAME = "keras_rnn"  # the flatbuffer metadata entry (export.tflite.flatbuffer)
FORMS_METADATA = "recurrent_forms"  # JSON {layer name: the form its time loop got}
# JSON [runtime, ...]: the ONNX runtimes an .onnx file's graph is proven in by the test suite.
# tf2onnx's own `Loop` form (custom cells, ConvLSTM) gives other numbers in the ONNX reference
# evaluator (0.07 off on keras-io's ConvLSTM model) and OpenVINO refuses it, so a file holding
# one claims ONNX Runtime alone; files without this field (older ones) claim nothing.
RUNTIMES_METADATA = "onnx_runtimes"
# an .onnx file quantized by export.onnx.quantize: the mode ("dynamic"); verify judges it on
# decisions, as quantized TFLite files
QUANTIZATION_METADATA = "quantization"


MAIN_INPUT, MAIN_OUTPUT = "inputs", "outputs"


MAX_TRANSLATION_LENGTH = 1000  # target words a translator writes at most (metadata bound)
# A model with stateful=True layers keeps their state from one call to the next. A .tflite
# file keeps it in resource variables inside the file (its "reset" signature zeroes them); an
# .onnx file, which holds nothing between runs, takes it as inputs state_0, state_1, ... and
# returns next_state_0, ... ; `STATEFUL_METADATA` lists them, JSON [[label, units], ...].
STATEFUL_METADATA = "stateful_states"
RESET_SIGNATURE = "reset"


def state_input_name(index: int) -> str:
    """The name of a file's `index`-th state input (step models, stateful ONNX files)."""
    return f"state_{index}"


def state_output_name(index: int) -> str:
    """The name of a file's `index`-th next-state output."""
    return f"next_state_{index}"


def stateful_layout(metadata: dict, path) -> list:
    """The `STATEFUL_METADATA` field: `[(label, units), ...]`, empty for a stateless file."""
    text = metadata.get(STATEFUL_METADATA)
    if text is None:
        return []
    try:
        layout = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        layout = None

    def is_pair(entry):
        return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and not isinstance(entry[1], bool)
                and 0 < entry[1] <= 1 << 20)

    if not isinstance(layout, list) or not layout or not all(map(is_pair, layout)):
        raise ModelFileError(f"{str(path)!r}: metadata field {STATEFUL_METADATA!r} must be a "
                             f"JSON list of [label, units] pairs; got {text[:80]!r}.")
    return [(label, units) for label, units in layout]


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes a .tflite file uses: builtin names, or `custom:NAME` (Flex ops are
    custom ops named `Flex...`). Reads the flatbuffer with LiteRT's schema, no TensorFlow."""
    from ai_edge_litert import schema_py_generated as schema

    builtin_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append(f"custom:{code.CustomCode().decode()}")
        else:
            names.append(builtin_names.get(builtin, f"builtin:{builtin}"))
    return names


def tflite_tensors(content: bytes):
    """Every tensor of every subgraph of a .tflite flatbuffer (LiteRT's own schema)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            yield graph.Tensors(t)


def has_variable_tensors(content: bytes) -> bool:
    return any(tensor.IsVariable() for tensor in tflite_tensors(content))


def tflite_metadata(content: bytes, path) -> dict:
    try:
        data = _tflite_metadata_bytes(content)
    except (struct.error, TypeError, IndexError, ValueError, AttributeError) as error:
        # the flatbuffer reader follows offsets the file gives: a crafted one points anywhere
        raise ModelFileError(f"{str(path)!r}: its metadata table is malformed "
                             f"({type(error).__name__}).") from None
    if data is None:
        return {}
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(
            f"{str(path)!r}: its {TFLITE_METADATA_NAME!r} metadata is not UTF-8 JSON of "
            f"strings ({type(error).__name__}).") from None
    return checked_metadata(metadata, path)


def _tflite_metadata_bytes(content: bytes) -> bytes | None:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() and entry.Name().decode(errors="replace") == TFLITE_METADATA_NAME:
            buffer = entry.Buffer()
            if not 0 <= buffer < model.BuffersLength():
                raise IndexError(buffer)
            data = model.Buffers(buffer).DataAsNumpy()
            return bytes(data) if isinstance(data, np.ndarray) else b""
    return None


def vocabulary_field(metadata: dict, key: str, path, *, required: bool = True):
    """The `keras_rnn.Vocabulary` in a metadata field, or None when absent and not required."""
    from keras_rnn.vocab import Vocabulary

    if key not in metadata:
        if not required:
            return None
        raise ModelFileError(f"{str(path)!r} carries no {key!r} in its metadata.")
    try:
        return Vocabulary.from_json(metadata[key])
    except ValueError as error:
        raise ModelFileError(f"{str(path)!r}: metadata field {key!r}: {error}") from None


def check_vocabulary_size(model, output: str, vocabulary, key: str) -> None:
    """A vocabulary decodes an output only if it has one symbol per output unit."""
    units = model.output_shapes.get(output, (None,))[-1]
    if units is not None and units != len(vocabulary):
        raise ModelFileError(
            f"{str(model.path)!r}: output {output!r} has {units} units but the {key!r} in its "
            f"metadata has {len(vocabulary)} symbols; the file and its vocabulary do not belong "
            "together.")


def checked_metadata(metadata, path) -> dict:
    """Metadata read from a file must be string keys and string values (what the exporters
    write); anything else is a ModelFileError naming the file and the field."""
    if not isinstance(metadata, dict):
        raise ModelFileError(
            f"{str(path)!r}: its metadata must be a JSON object of strings; got "
            f"{type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ModelFileError(
                f"{str(path)!r}: metadata field {key!r} must be a string; got "
                f"{type(value).__name__}.")
    return dict(metadata)


def metadata_int(metadata: dict, key: str, default: int, path, *, low: int, high: int) -> int:
    """An integer field of a file's metadata, bounded: a file someone else wrote cannot make a
    loop run for minutes or allocate without limit."""
    text = metadata.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ModelFileError(
            f"{str(path)!r}: metadata field {key!r} must be an integer; got {text!r}.") from None
    if not low <= value <= high:
        raise ModelFileError(
            f"{str(path)!r}: metadata field {key!r} is {value}; expected {low} to {high}.")
    return value
