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


def frozen_converter(frozen, signature, names):
    """The TFLite converter (builtin ops) for a traced function (frozen, or of constants only)
    returning a dict of outputs `names`, handed over with a trackable owner: the converter's
    current path, which writes a signature with the inputs' and outputs' names."""
    import tensorflow as tf

    def named(*inputs):  # the frozen function's outputs under their names again
        results = frozen(*inputs)
        if isinstance(results, dict):
            return results
        return dict(zip(sorted(names), tf.nest.flatten(results)))  # dicts flatten sorted

    holder = tf.Module()
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


def add_metadata(flatbuffer: bytes, metadata: dict, *, signature_names=None,
                 io_names=None, lean: bool = False) -> bytes:
    """Stores `metadata` (string key/values, as JSON) in a `keras_rnn` flatbuffer entry;
    `signature_names=(input, output)` renames a single-input, single-output signature;
    `io_names=(inputs, outputs)` writes the signature the converter left out, if it did;
    `lean` drops the names of every tensor but the inputs and outputs (`_drop_names`)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    if signature_names and model.signatureDefs:
        signature = model.signatureDefs[0]
        signature.inputs[0].name, signature.outputs[0].name = signature_names
    if io_names and not model.signatureDefs:
        model.signatureDefs = [_signature(schema, model.subgraphs[0], *io_names)]
    if lean:
        _drop_names(model)
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
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
