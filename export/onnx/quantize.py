"""Quantized ONNX files through ONNX Runtime's own tools (`onnxruntime.quantization`,
`onnxruntime.transformers.float16`).

`quantize="dynamic"`: int8 weights, activations quantized on the fly, by
`quantize_dynamic(weight_type=QInt8, reduce_range=True)`: each `LSTM` becomes ONNX Runtime's
`DynamicQuantizeLSTM`, each `MatMul` a `MatMulInteger` (measured on the medium LSTM: 0.27x the
size, 2.0x faster at batch 1, 99% argmax agreement on random weights). `reduce_range` keeps 7-bit
weights: with 8 bits the int8 products saturate on CPUs without VNNI instructions (84% argmax
agreement measured there). The tool leaves `GRU` and `RNN` operators in float32 (1.0x size and
speed), so a model without an LSTM is refused rather than written as a "quantized" file that
is not. The file runs in ONNX Runtime alone (its contrib operators) and says so; `verify`
judges it on decisions, as quantized TFLite files.

`quantize="float16"`: float16 weights and arithmetic, float32 inputs and outputs, by
`convert_float_to_float16(keep_io_types=True)` (the copy of onnxconverter-common's converter
that ONNX Runtime ships, so no other dependency): half the size, the same speed on CPUs (ONNX
Runtime computes the recurrent operators in float32 there, behind casts). The inputs are cast to
float16 inside the file: values beyond +-65504 become infinite and values below 6e-8 become 0,
which a `Masking` layer then reads as padding. The converter appends its input casts after the
nodes that read them; the nodes are put back in topological order (the ONNX rule, which the
reference evaluator enforces). Measured on the medium models (50 steps, 64 features, hidden 128,
random weights, batch 64): 0.50-0.57x the size, 3e-4 (LSTM) to 1.3e-3 (SimpleRNN) from Keras, every
decision kept, in ONNX Runtime, OpenVINO and the reference evaluator alike; the file claims the
runtimes its float32 graph claims.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from export.runtime.metadata import QUANTIZATION_METADATA, RUNTIMES_METADATA
from keras_rnn.structure import UnsupportedModelError

ONNX_QUANTIZE = (None, "dynamic", "float16")


def check_quantize(quantize) -> None:
    if quantize not in ONNX_QUANTIZE:
        raise ValueError(f"Unknown quantize {quantize!r} for ONNX; expected one of "
                         f"{[mode for mode in ONNX_QUANTIZE if mode]} or None (float32). "
                         "(int8 is a TFLite mode.)")


def quantized(proto, quantize):
    """The `ModelProto` quantized as `quantize` names (None: `proto` itself)."""
    check_quantize(quantize)
    if quantize is None:
        return proto
    import onnx

    if quantize == "float16":
        result = _float16(proto)
    else:
        result = _dynamic(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    metadata[QUANTIZATION_METADATA] = quantize
    if quantize == "dynamic":
        metadata[RUNTIMES_METADATA] = json.dumps(["onnxruntime"])  # its contrib operators
    del result.metadata_props[:]
    for key, value in metadata.items():
        entry = result.metadata_props.add()
        entry.key, entry.value = key, value
    # (the tools keep the IR version; a newer one would not load in onnxruntime 1.31)
    result.ir_version = min(result.ir_version, proto.ir_version)
    onnx.checker.check_model(result, full_check=True)
    return result


def _dynamic(proto):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    operators = {node.op_type for node in proto.graph.node}
    if "LSTM" not in operators:
        recurrent = sorted(operators & {"GRU", "RNN", "Loop"})
        raise UnsupportedModelError(
            "quantize='dynamic' for ONNX: ONNX Runtime's quantizer turns LSTM operators and "
            f"MatMul into int8 and leaves {', '.join(recurrent) or 'the rest'} in float32, so "
            "this model (no LSTM) would keep its size and speed. Export the float32 .onnx, or "
            ".tflite with quantize='dynamic'.")
    logger = logging.getLogger()  # the tool logs its advice through the root logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as directory:
            source, target = Path(directory) / "float.onnx", Path(directory) / "int8.onnx"
            source.write_bytes(proto.SerializeToString())
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True)
            result = onnx.load(str(target))
    finally:
        logger.setLevel(level)
    return result


def _float16(proto):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    result = convert_float_to_float16(onnx.ModelProto.FromString(proto.SerializeToString()),
                                      keep_io_types=True)
    # the converter records every intermediate tensor's inferred type (value_info, 5-6 KiB on a
    # small model); the runtimes infer them again, so the file keeps only what it had
    kept = {item.name for item in proto.graph.value_info}
    inferred = [item for item in result.graph.value_info if item.name in kept]
    del result.graph.value_info[:]
    result.graph.value_info.extend(inferred)
    _topological_order(result.graph)
    return result


def _topological_order(graph) -> None:
    """Puts `graph`'s nodes in an order where each reads only tensors written before it
    (stable: nodes keep their order where they can). Subgraphs read the outer scope, so a node's
    subgraph inputs count as its inputs."""
    known = {item.name for item in graph.input} | {item.name for item in graph.initializer}
    known.add("")  # an omitted optional input
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if _reads(node) <= known]
        if not ready:
            raise UnsupportedModelError("The float16 converter wrote a graph with a cycle or "
                                        f"a missing tensor (at {pending[0].name!r}).")
        for node in ready:
            known.update(node.output)
        ordered.extend(ready)
        ready_ids = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in ready_ids]
    copies = [type(node).FromString(node.SerializeToString()) for node in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def _reads(node) -> set:
    """The tensors `node` reads from its graph: its inputs and what its subgraphs read that
    they do not write."""
    names = set(node.input)
    for attribute in node.attribute:
        for subgraph in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
            written = {item.name for item in subgraph.input}
            written |= {item.name for item in subgraph.initializer}
            for inner in subgraph.node:
                written.update(inner.output)
            for inner in subgraph.node:
                names |= _reads(inner) - written
            names |= {item.name for item in subgraph.output} - written
    return names
