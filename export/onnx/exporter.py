"""Keras model -> ONNX with the native recurrent operators (`RNN`, `LSTM`, `GRU`).

The whole graph goes through tf2onnx, the standard converter, except the built-in recurrent
layers: `export.model.rebuild` rebuilds the model with each of them replaced by an opaque marker
op (`export.onnx.splice`), and each marker is then written as the native operator from the
layer's trained weights. tf2onnx alone would write GRU and SimpleRNN as a generic `Loop`,
several times slower in ONNX Runtime, and cannot reproduce Keras's masks with the native
operators. The batch axis is dynamic, and the time axis wherever the model allows.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from export._files import check_writable, write_atomic
from export.model.layers import cell_runs, recurrent_forms
from export.model.rebuild import clone_with, for_export
from export.model.signature import check_exportable, frozen_inference, input_specs, output_names
from export.model.state import state_layout, states_by_layer
from export.onnx.quantize import check_quantize, quantized
from export.onnx.splice import (
    MARKER_DOMAIN,
    MARKER_OP,
    mark_recurrent,
    marker_maker,
    splice_markers,
)
from export.runtime import (
    FORMS_METADATA,
    STATEFUL_METADATA,
)
from export.runtime.engines import ONNX_RUNTIMES
from export.runtime.metadata import RUNTIMES_METADATA
from keras_rnn.quiet import load_tensorflow, native_stderr_silenced
from keras_rnn.structure import UnsupportedModelError

DEFAULT_OPSET = 17
MIN_OPSET = 14  # Softmax over the last axis alone, ReduceSum with axes as an input
MAX_OPSET = 21  # the newest opset checked against onnxruntime 1.31 here


# From this batch on, ONNX Runtime runs a SimpleRNN layer faster as tf2onnx's own `Loop` (a
# MatMul, Add and Tanh per step, on its threaded GEMM) than as the native `RNN` operator, whose
# kernel is the fastest form at batch 1. Measured on the medium SimpleRNN (50 steps, 64
# features, hidden 128), Loop time over RNN time: batch 1 2.1-3.4x, 4 1.2-1.4x, 8 0.9-1.1x,
# 16 0.69-0.80x, 64 0.58-0.60x, 256 0.46x (1 and 2 threads). LSTM and GRU: the native
# operators are as fast or faster at every batch (GRU 1.0-4.5x faster, LSTM the same op).
LOOP_SIMPLE_RNN_FROM_BATCH = 16


def export_onnx(model, path, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None,
                quantize: str | None = None, batch_size: int | None = None) -> Path:
    """Exports a Keras RNN model to an ONNX file that ONNX Runtime runs.

    Args:
        model: a built Keras model: any graph that tf2onnx converts (Sequential, functional,
            several inputs and outputs), the built-in recurrent layers as native operators.
        path: the `.onnx` file to write; written atomically (no partial file on failure).
        opset: ONNX opset, from 14 to 21.
        metadata: string key/values stored in `metadata_props` (e.g. the vocabulary, see
            `export.metadata`), readable by any ONNX runtime.
        quantize: None (float32); "dynamic": int8 weights through ONNX Runtime's own
            quantizer (models with LSTM layers; ONNX Runtime only); "float16": float16
            weights, float32 inputs and outputs (`export.onnx.quantize` says what each costs).
        batch_size: the batch the file will mostly run at (None: small batches). The file
            takes any batch; from `LOOP_SIMPLE_RNN_FROM_BATCH` on, SimpleRNN layers (not
            stateful ones) are written in tf2onnx's `Loop` form, 1.7x faster at batch 64 in
            ONNX Runtime and 3x slower at batch 1 than the native `RNN` operator; such a file
            claims ONNX Runtime alone, as every `Loop` form does.

    Returns:
        The written path. A model with one input and one output has `inputs` /
        `outputs`; otherwise the model's own input and output names. Batch and time axes
        are dynamic wherever the model allows.
    """
    check_quantize(quantize)
    path = check_writable(path, suffix=".onnx")
    proto = quantized(build_onnx(model, opset=opset, metadata=metadata, batch_size=batch_size),
                      quantize)
    return write_atomic(path, proto.SerializeToString())


@for_export
def build_onnx(model, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None,
               batch_size: int | None = None):
    """The ONNX `ModelProto` for `model`, checked with `onnx.checker` (full check)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, int) or batch_size <= 0):
        raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}.")

    check_exportable(model, carried_state=False)
    tf = load_tensorflow()
    markers = {}
    make_marker = marker_maker(markers)
    looped = []  # the layers left to tf2onnx's Loop for a server batch

    def stand_in(original, description):
        if (batch_size or 0) >= LOOP_SIMPLE_RNN_FROM_BATCH and not getattr(
                original, "stateful", False) and {run.cell for run in cell_runs(description)} \
                == {"simple_rnn"}:
            looped.append(original.name)
            return original
        return make_marker(original, description)

    graph = clone_with(model, stand_in, batched_dense=True)
    names = output_names(model)
    signature = [tf.TensorSpec((None,) + shape[1:], dtype, name=name)
                 for name, shape, dtype in input_specs(model)]

    # loops kept as loops, as tf2onnx's own loader freezes them
    frozen = frozen_inference(graph, model, signature, lower_control_flow=False,
                              aggressive_inlining=True)
    shapes = dict(zip(names, (tuple(tensor.shape) for tensor in model.outputs)))
    forms = recurrent_forms(model, "native operator", graph)
    forms.update((name, "converter loop") for name in looped)
    metadata = {**(metadata or {}), FORMS_METADATA: json.dumps(forms)}
    layout = state_layout(model)
    if layout:
        metadata[STATEFUL_METADATA] = json.dumps(layout)
    proto = converted_graph(frozen, markers, opset, input_names=[spec.name for spec in signature],
                            outputs=[(name, shapes[name]) for name in sorted(names)],
                            carried_states=states_by_layer(layout), metadata=metadata)
    if any(node.op_type in ("Loop", "Scan") for node in proto.graph.node):
        for layer, form in forms.items():
            if form != "native operator":
                forms[layer] = "Loop"
        _set_metadata(proto, FORMS_METADATA, json.dumps(forms))
    return proto


def converted_graph(frozen, markers: dict, opset: int, *, input_names, outputs,
                    carried_states: dict, metadata: dict):
    """The checked ONNX model of a frozen traced function whose recurrent layers are
    `markers`: tf2onnx for everything else, each marker spliced into its native operator
    (`carried_states`: the stateful layers' state indices, `states_by_layer`), Python ops
    refused, inputs and `outputs` ((name, shape) in the function's flattened order) named."""
    proto = _tf2onnx(frozen, opset, markers)
    splice_markers(proto, markers, opset, carried_states)
    _refuse_unknown_ops(proto)
    _name_inputs(proto, input_names)
    _name_outputs(proto, outputs)
    metadata = {**metadata, RUNTIMES_METADATA: json.dumps(proven_runtimes(proto.graph))}
    return finish_model(proto.graph, opset, metadata,
                        extra_opsets=[o for o in proto.opset_import
                                      if o.domain not in ("", MARKER_DOMAIN)])


# The activations each ONNX runtime runs in the recurrent operators, measured here with every
# activation Keras's recurrent layers take (the tests prove the rest): the reference evaluator
# runs RNN with Tanh or Affine alone (it refuses others) and LSTM/GRU with their default
# activations whatever the attribute says (a relu LSTM: 0.33 off, silently); OpenVINO refuses
# Affine (linear) and HardSigmoid.
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_OPENVINO_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu"}


def proven_runtimes(graph) -> list[str]:
    """The ONNX runtimes that give Keras's answer for this graph (`RUNTIMES_METADATA`): every
    one, but ONNX Runtime alone for tf2onnx's own `Loop` form (the reference evaluator gives
    other numbers, OpenVINO refuses it) and without the runtimes that lack a recurrent
    operator's activations."""
    runtimes = list(ONNX_RUNTIMES)
    if _shared_recurrent_inputs(graph):
        runtimes.remove("openvino")
    for node in graph.node:
        if node.op_type == "Loop":
            return ["onnxruntime"]
        if node.op_type not in _DEFAULT_ACTIVATIONS:
            continue
        attribute = next((a for a in node.attribute if a.name == "activations"), None)
        names = [name.decode() for name in attribute.strings] if attribute else []
        default = _DEFAULT_ACTIVATIONS[node.op_type]
        if node.op_type == "RNN":
            reference = set(names) <= {"Tanh", "Affine"}
        else:
            reference = not names or names == default * (len(names) // len(default))
        if not reference and "reference" in runtimes:
            runtimes.remove("reference")
        if not set(names) <= _OPENVINO_ACTIVATIONS and "openvino" in runtimes:
            runtimes.remove("openvino")
    return runtimes


def _shared_recurrent_inputs(graph) -> bool:
    """True when two recurrent operators read the same tensor (through the transposes, reversals
    and gathers in front of them). OpenVINO 2026.4 gives one of them wrong outputs then when
    the time length is fixed (two GRUs over one input, return_sequences: 0.79 off, silently),
    so such a file does not claim it."""
    producers = {output: node for node in graph.node for output in node.output}
    passing = {"Transpose", "Slice", "GatherElements", "Identity"}
    roots = []
    for node in graph.node:
        if node.op_type in _DEFAULT_ACTIVATIONS:
            tensor = node.input[0]
            while tensor in producers and producers[tensor].op_type in passing:
                tensor = producers[tensor].input[0]
            roots.append(tensor)
    return len(roots) != len(set(roots))


def _set_metadata(proto, key: str, value: str) -> None:
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value


def _tf2onnx(frozen, opset: int, markers: dict):
    """tf2onnx on the frozen traced function, each recurrent marker left as an opaque node,
    without its terminal output (its INFO logging and TensorFlow's native start-up lines)."""
    import logging

    import onnx
    import tf2onnx

    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(add_shapes=True), opset=opset,
                input_names=[tensor.name for tensor in frozen.inputs],
                output_names=[tensor.name for tensor in frozen.outputs],
                # (the old-style handler list: its first entry is the ONNX op type)
                custom_op_handlers={op: (mark_recurrent, [MARKER_OP, markers])
                                    for op in ("PyFunc", "PyFuncStateless")},
                extra_opset=[onnx.helper.make_opsetid(MARKER_DOMAIN, 1)])
    except Exception as error:
        lines = str(error).strip().splitlines()
        raise UnsupportedModelError(
            "tf2onnx could not convert the model: "
            f"{lines[-1] if lines else type(error).__name__}") from error
    finally:
        tf2onnx_logger.setLevel(level)
    return proto


def _refuse_unknown_ops(proto) -> None:
    """Ops left with no ONNX form (Python code in the graph, TensorFlow ops tf2onnx does not
    convert) are refused together, each with the node it came from."""
    import onnx

    unknown = [f"{node.op_type} (from {node.name})" for node in _all_nodes(proto.graph)
               if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)]
    if unknown:
        numpy_function = any("PyFunc" in item for item in unknown)
        raise UnsupportedModelError(
            f"These ops have no ONNX form: {', '.join(unknown)}."
            + (" A tf.numpy_function/py_function runs Python, which no ONNX runtime can."
               if numpy_function else ""))


def _all_nodes(graph):
    """The graph's nodes and those of its subgraphs (the bodies of Loop, Scan and If)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _all_nodes(subgraph)


def _name_inputs(proto, names) -> None:
    """The graph's inputs under the exported names (the frozen graph calls them `name:0`)."""
    renames = {}
    for graph_input, name in zip(proto.graph.input, names):
        if graph_input.name != name:
            renames[graph_input.name] = name
            graph_input.name = name
    for node in proto.graph.node:
        for index, value in enumerate(node.input):
            if value in renames:
                node.input[index] = renames[value]


def _name_outputs(proto, outputs) -> None:
    """The graph's outputs under the exported names (in the converter's order), with the
    Keras model's output shapes where the converter could not infer them."""
    import onnx

    for output, (name, shape) in zip(proto.graph.output, outputs):
        if output.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
        if not output.type.tensor_type.HasField("shape"):
            for axis, size in enumerate(shape):
                dim = output.type.tensor_type.shape.dim.add()
                if size is None:
                    dim.dim_param = f"{name}_{axis}"
                else:
                    dim.dim_value = size


def finish_model(graph_proto, opset: int, metadata: dict | None, extra_opsets=()):
    """Wraps a graph into a checked `ModelProto` that onnxruntime 1.31 loads."""
    import onnx

    opset_ids = [onnx.helper.make_opsetid("", opset)] + list(extra_opsets)
    proto = onnx.helper.make_model(
        graph_proto,
        opset_imports=opset_ids,
        producer_name="keras-rnn",
        # onnx 1.23 would write IR version 14, which onnxruntime 1.31 refuses to load: use the
        # lowest IR version that carries this opset.
        ir_version=onnx.helper.find_min_ir_version_for(opset_ids),
    )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return proto
