"""Converting traced TF functions to builtin-only flatbuffers, and checking and annotating them:
Flex or custom ops refused with the layer named, the project's metadata entry written.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np

from export.runtime import (
    TFLITE_METADATA_NAME,
    operator_names,
)
from keras_rnn.quiet import native_stderr_silenced


class TFLiteConversionError(ValueError):
    """The model could not be converted to builtin-only TFLite."""


def frozen_converter(frozen, signature, names, *, owners=()):
    """The TFLite converter (builtin ops) for a traced function (frozen, or of constants only)
    returning a dict of outputs `names`, handed over with a trackable owner: the converter's
    current path, which writes a signature with the inputs' and outputs' names.

    `owners` (the models a function reading strings calls, not frozen) are tracked by that
    owner, so the converter finds their StringLookup tables and writes each as HASHTABLE
    builtins filled once when the file is opened; frozen, a table loses its initialiser and
    the converter meets a bare resource placeholder (measured). The converter still freezes
    the weights, which are only read."""
    import tensorflow as tf

    def named(*inputs):  # the frozen function's outputs under their names again
        results = frozen(*inputs)
        if isinstance(results, dict):
            return results
        return dict(zip(sorted(names), tf.nest.flatten(results)))  # dicts flatten sorted

    holder = tf.Module()
    holder.owners = list(owners)
    # (Keras 3 layers do not list their tf.Variables as trackable children: listed here, the
    # converter freezes the values they hold; untracked, it read other values, measured)
    holder.variables_ = [variable.value for owner in owners for variable in owner.variables]
    holder.function = tf.function(named, autograph=False, input_signature=signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.function.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert(converter, layer_names) -> bytes:
    """Runs the converter without its terminal output (its settings printed from C++, the
    SavedModel summary of `from_keras_model`, the int8 statistics warning), then refuses any
    Flex or custom op in the result."""
    try:
        with (native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()),
              warnings.catch_warnings()):
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            # the int8 calibrator runs TensorFlow's own (deprecated) interpreter internally
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is")
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError and others
        raise TFLiteConversionError(_explain_conversion_error(error, layer_names)) from error
    check_builtin_only(flatbuffer, layer_names)
    return flatbuffer


def _explain_conversion_error(error, layer_names) -> str:
    text = str(error)
    culprits = [name for name in layer_names if f"{name}/" in text]
    where = f" in layer {culprits[0]!r}" if culprits else ""
    first_line = next((line for line in text.splitlines() if "error" in line.lower()), text[:300])
    return (
        f"TFLite conversion failed{where}: {first_line.strip()} "
        "The exporter uses TFLite builtin ops only and never falls back to Flex (TensorFlow) "
        "ops, which the standalone LiteRT interpreter cannot run."
    )


def check_builtin_only(flatbuffer: bytes, layer_names=None) -> None:
    """Raises TFLiteConversionError if the file holds any Flex or custom op."""
    foreign = [name for name in operator_names(flatbuffer) if name.startswith("custom:")]
    if foreign:
        layers = ""
        if layer_names:
            layers = f" (model layers: {list(layer_names)})"
        raise TFLiteConversionError(
            f"The converted model needs non-builtin ops {foreign}{layers}; the standalone "
            "LiteRT interpreter cannot run Flex or custom ops, so no file was written."
        )


def _signature(schema, graph, inputs, outputs):
    """The `serving_default` signature of a one-subgraph flatbuffer that has none: the
    converter leaves it out when the traced function calls TensorFlow functions of its own
    (`tf.nn.silu`'s custom gradient, measured), so the tensors would be known only by their
    graph names ('Identity'). Inputs in signature order; outputs in the order the traced
    function's dict of outputs flattens (sorted by name)."""
    if len(graph.inputs) != len(inputs) or len(graph.outputs) != len(outputs):
        raise TFLiteConversionError(
            f"The converter wrote {len(graph.inputs)} inputs and {len(graph.outputs)} outputs "
            f"for a model of {len(inputs)} and {len(outputs)}.")
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = [], []
    for names, indices, entries in ((inputs, graph.inputs, signature.inputs),
                                    (sorted(outputs), graph.outputs, signature.outputs)):
        for name, index in zip(names, indices):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            entries.append(entry)
    return signature


def _drop_names(model) -> None:
    """Removes the graph-path names of the intermediate tensors, which only debugging tools
    read: in an unrolled int8 file they are the largest part after the weights (83-210 KiB
    of 307-329 KiB on the medium LSTM, measured), too much for a microcontroller's flash.
    LiteRT and TensorFlow Lite for Microcontrollers address tensors by index and read a
    missing name as an empty one; the inputs and outputs keep theirs (a file without a
    signature is fed by them)."""
    for graph in model.subgraphs:
        kept = {int(index) for index in list(graph.inputs) + list(graph.outputs)}
        for index, tensor in enumerate(graph.tensors):
            if index not in kept:
                tensor.name = None


def builtin_codes(model) -> list[int]:
    """Each operator code's builtin operator (`model` unpacked, `schema.ModelT`): the newer
    field, or the deprecated one that files of older converters fill."""
    return [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]


def packed(model, size_hint: int = 1024) -> bytes:
    """An unpacked model (`schema.ModelT`) as .tflite bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# A constant of zeros at least this large is computed when the file runs instead of stored
ZEROS_COMPUTED_FROM_BYTES = 1024
_ZERO_TYPES = {0: np.float32, 2: np.int32, 9: np.int8}  # TensorType FLOAT32, INT32, INT8


def _computed_zeros(model, schema) -> None:
    """Replaces each large constant of zeros a WHILE loop starts from by a FILL of zero (other
    constants, weights included, stay as they are). The converter writes a WHILE
    loop's output accumulator (a sequence-returning recurrent layer) as a stored float32
    constant of steps x batch x units zeros: 25 KiB of the medium GRU's 111 KiB int8 file at
    batch 1 (1.47x its parameter count instead of 1.13x), 1.6 MiB at batch 64, the largest
    part of Keras's own LiteRT file too. A FILL computes the same zeros into the tensor when
    the file runs (the loop copies them into working memory either way)."""
    codes = builtin_codes(model)
    fill = (codes.index(schema.BuiltinOperator.FILL) if schema.BuiltinOperator.FILL in codes
            else None)
    users = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    loop = schema.BuiltinOperator.WHILE
    for graph in model.subgraphs:
        filled = []
        loop_inputs = {int(index) for operator in graph.operators or []
                       if codes[operator.opcodeIndex] == loop for index in operator.inputs}
        for index, tensor in enumerate(graph.tensors):
            buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
            data = None if buffer is None else buffer.data
            if (index not in loop_inputs or data is None or len(data) < ZEROS_COMPUTED_FROM_BYTES
                    or tensor.type not in _ZERO_TYPES or np.any(np.asarray(data))):
                continue
            if fill is None:
                code = schema.OperatorCodeT()
                code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FILL
                code.version = 1
                model.operatorCodes.append(code)
                fill = len(model.operatorCodes) - 1
            dims = _constant(model, graph, schema, np.asarray(tensor.shape, np.int32), 2)
            zero = _constant(model, graph, schema, np.zeros((), _ZERO_TYPES[tensor.type]),
                             tensor.type, tensor.quantization)
            users[tensor.buffer] -= 1
            if not users[tensor.buffer]:
                buffer.data = None
            tensor.buffer = 0  # (the empty buffer: the tensor lives in working memory)
            operator = schema.OperatorT()
            operator.opcodeIndex, operator.inputs, operator.outputs = fill, [dims, zero], [index]
            operator.builtinOptionsType = schema.BuiltinOptions.FillOptions
            operator.builtinOptions = schema.FillOptionsT()
            filled.append(operator)
        graph.operators = filled + list(graph.operators or [])


def _constant(model, graph, schema, value: np.ndarray, tensor_type: int, quantization=None):
    """A new constant tensor of `value` in `graph`; its index."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value.tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer = list(value.shape), tensor_type, len(model.buffers) - 1
    tensor.quantization = quantization
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def add_metadata(flatbuffer: bytes, metadata: dict, *, signature_names=None,
                 io_names=None, lean: bool = False) -> bytes:
    """Stores `metadata` (string key/values, as JSON) in a `keras_rnn` flatbuffer entry;
    `signature_names=(input, output)` renames a single-input, single-output signature;
    `io_names=(inputs, outputs)` writes the signature the converter left out, if it did;
    `lean` drops the names of every tensor but the inputs and outputs (`_drop_names`)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    if signature_names and model.signatureDefs:
        signature = model.signatureDefs[0]
        signature.inputs[0].name, signature.outputs[0].name = signature_names
    if io_names and not model.signatureDefs:
        model.signatureDefs = [_signature(schema, model.subgraphs[0], *io_names)]
    if lean:
        _drop_names(model)
    _computed_zeros(model, schema)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(
        json.dumps({str(k): str(v) for k, v in metadata.items()}, ensure_ascii=False).encode(),
        np.uint8,
    )
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return packed(model, len(flatbuffer) + 1024)
