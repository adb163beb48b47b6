"""Streaming step models: one step of a trained network, the recurrent state carried outside.

A device generating text char by char should not re-run the whole prefix for every new
character. A step model takes one step's input and the state, and returns that step's output
and the next state:

    inputs  (batch, features) float32, or (batch,) int32 ids    ->  outputs (batch, classes)
    state_0, state_1, ...  (batch, units) float32 each            ->  next_state_0, ...

States are numbered in layer order; an LSTM layer has two (h, then c), SimpleRNN and GRU one.
Starting from zero states and feeding a sequence step by step gives, at every step, what the
Keras model gives on the sequence so far. Streaming has no padding: feed real steps only (a
mask would make Keras skip a padding step, a step model does not). Layers that need the future
(`Bidirectional`, `go_backwards`) cannot stream and are refused.

`export_step(model, "m.step.tflite")` writes builtin-only TFLite (fixed batch);
`export_step(model, "m.step.onnx")` writes ONNX with the native RNN/LSTM/GRU operators run for
one step (dynamic batch). `export.runtime.StepModel` runs either without TensorFlow.

Lecture chains (Embedding/Masking, recurrent layers, Dense heads) are written here by hand,
the smallest step model; any other graph that streams (normalization, merges of step-wise
branches, several inputs...) is rebuilt by `export.streaming`, and one that cannot (layers
reading other steps) is refused naming every such layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from export.graph import state_labels
from export.runtime import MAIN_INPUT, MAIN_OUTPUT, state_input_name, state_output_name
from export.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Recurrent,
    UnsupportedModelError,
    read_model,
)

INPUT_NAME, OUTPUT_NAME = MAIN_INPUT, MAIN_OUTPUT  # what export.runtime.StepModel reads
ATTENTION_NAME = "attention_weights"
STATES_METADATA = "step_states"  # JSON [[layer name, units], ...] in state order


def step_states(structure) -> list[tuple[str, int]]:
    """`(label, units)` for each state the step model carries, in order."""
    return [state for layer in structure.layers if isinstance(layer, Recurrent)
            for state in state_labels(layer.name, layer)]


def export_step(model, path, *, batch_size: int = 1, metadata: dict | None = None,
                opset: int | None = None) -> Path:
    """Writes the step model of `model` to `path` (`.tflite` or `.onnx`, by its suffix).

    Args:
        batch_size: the fixed batch of a .tflite step model (ONNX keeps the batch dynamic).
        metadata: string key/values stored with the file (e.g. the vocabulary); the state
            layout is added as `step_states`.
        opset: ONNX opset (default: `export.onnx.DEFAULT_OPSET`).
    """
    suffix = Path(path).suffix
    if suffix not in (".tflite", ".onnx"):
        raise ValueError(f"Step model path {str(path)!r} must end in .tflite or .onnx.")
    path = check_writable(path, suffix=suffix)
    if suffix == ".tflite":
        data = build_step_tflite(model, batch_size=batch_size, metadata=metadata)
    else:
        from export.onnx import DEFAULT_OPSET

        data = build_step_onnx(model, opset=opset or DEFAULT_OPSET,
                               metadata=metadata).SerializeToString()
    return write_atomic(path, data)


def streamable_structure(model, structure=None):
    """The model's structure (`structure`, if already read), refused with a clear error if it
    cannot run step by step."""
    structure = read_model(model) if structure is None else structure
    for layer in structure.layers:
        if isinstance(layer, Bidirectional) or (isinstance(layer, Recurrent) and layer.go_backwards):
            raise UnsupportedModelError(
                f"Layer {layer.name!r} reads the sequence backwards, so its output at a step "
                "depends on steps not yet seen: a model with Bidirectional or go_backwards "
                "layers cannot be streamed. Export the whole-sequence model instead."
            )
    if not structure.recurrent_layers:
        raise UnsupportedModelError(f"Model {model.name!r} has no recurrent layer to stream.")
    return structure


def _chain(model):
    """The model's structure when it is a lecture chain (written here by hand, the smallest
    step model), refused when it cannot stream; None for any other graph, which
    `export.streaming` rebuilds."""
    try:
        structure = read_model(model)
    except UnsupportedModelError:
        return None
    return streamable_structure(model, structure)


def with_states(structure, metadata):
    entries = dict(metadata or {})
    entries[STATES_METADATA] = json.dumps(step_states(structure))
    return entries


# -- TFLite ---------------------------------------------------------------------------------

def build_step_tflite(model, *, batch_size: int = 1, metadata: dict | None = None) -> bytes:
    """The builtin-only `.tflite` bytes of the step model."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    structure = _chain(model)
    if structure is None:
        from export.streaming import graph_step_tflite

        return graph_step_tflite(model, batch_size=batch_size, metadata=metadata)
    return step_tflite(structure, batch_size=batch_size,
                       metadata=with_states(structure, metadata))


def step_tflite(structure, *, batch_size: int, metadata: dict | None, attention=None,
                source_len: int | None = None) -> bytes:
    """Converts one step of `structure` (Embedding/Recurrent/Dense/Activation layers) to
    TFLite; with `attention` (see `export.seq2seq`) the last recurrent output also attends over
    `encoder_outputs` (batch, source_len, units) before the head."""
    import tensorflow as tf

    from export.tflite import (
        activation_op,
        add_metadata,
        cell_step,
        convert_function,
        dense_op,
        input_bias,
    )

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if structure.takes_ids:
        specs = [tf.TensorSpec((batch_size,), tf.int32, name=INPUT_NAME)]
    else:
        specs = [tf.TensorSpec((batch_size, structure.input_shape[2]), tf.float32,
                               name=INPUT_NAME)]
    states = step_states(structure)
    specs += [tf.TensorSpec((batch_size, units), tf.float32, name=state_input_name(i))
              for i, (_, units) in enumerate(states)]
    if attention is not None:
        units = attention.units
        specs += [tf.TensorSpec((batch_size, source_len, units), tf.float32, name=name)
                  for name in ("encoder_outputs", "encoder_keys")]
        specs.append(tf.TensorSpec((batch_size, source_len), tf.float32, name="source_mask"))

    def step(inputs, *rest):
        carried = list(rest[:len(states)])
        values, new_states, outputs = inputs, [], {}
        for layer in structure.layers:
            if isinstance(layer, Embedding):
                values = tf.gather(tf.constant(layer.table), values)
            elif isinstance(layer, Recurrent):
                h = carried.pop(0)
                c = carried.pop(0) if layer.cell == "lstm" else None
                projected = dense_op(values, layer.kernel, input_bias(layer))
                h, c = cell_step(layer, projected, h, c)
                new_states += [h, c] if layer.cell == "lstm" else [h]
                values = h
            elif isinstance(layer, Dense):
                if attention is not None:
                    encoder_outputs, encoder_keys, source_mask = rest[len(states):]
                    context, weights = _attend(attention, values, encoder_outputs,
                                               encoder_keys, source_mask)
                    values = tf.concat([values, context], axis=-1)
                    outputs[ATTENTION_NAME] = weights
                values = activation_op(layer.activation, dense_op(values, layer.kernel, layer.bias))
            elif isinstance(layer, Activation):
                values = activation_op(layer.activation, values)
        outputs[OUTPUT_NAME] = values
        outputs.update({state_output_name(i): s for i, s in enumerate(new_states)})
        return outputs

    flatbuffer = convert_function(step, specs, structure)
    return add_metadata(flatbuffer, metadata) if metadata else flatbuffer


def _attend(attention, query_state, encoder_outputs, encoder_keys, source_mask):
    """Additive attention for one decoder step, as `keras.layers.AdditiveAttention` computes
    it: returns the context (batch, units) and the weights (batch, source steps)."""
    import tensorflow as tf

    query = tf.matmul(query_state, tf.constant(attention.query_kernel)) + tf.constant(
        attention.query_bias)
    scores = tf.reduce_sum(tf.constant(attention.scale) * tf.tanh(
        query[:, None, :] + encoder_keys), axis=-1)
    scores = tf.where(source_mask > 0.5, scores, scores - 1e9)  # padding gets no weight
    weights = tf.nn.softmax(scores, axis=-1)
    context = tf.reduce_sum(weights[:, :, None] * encoder_outputs, axis=1)
    return context, weights


# -- ONNX -----------------------------------------------------------------------------------

def build_step_onnx(model, *, opset: int, metadata: dict | None = None):
    """The ONNX `ModelProto` of the step model: each recurrent layer is its native operator
    run for one step from `initial_h` (and `initial_c`)."""
    structure = _chain(model)
    if structure is None:
        from export.onnx import MAX_OPSET, MIN_OPSET
        from export.streaming import graph_step_onnx

        if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, "
                             f"got {opset!r}.")
        return graph_step_onnx(model, opset=opset, metadata=metadata)
    return step_onnx(structure, name=f"{model.name}_step", opset=opset,
                     metadata=with_states(structure, metadata))


def step_onnx(structure, *, name: str, opset: int, metadata: dict | None, attention=None):
    """One step of `structure` as an ONNX model (dynamic batch; with `attention`, dynamic
    source length too); see `step_tflite`."""
    import onnx

    from export.onnx import MAX_OPSET, MIN_OPSET, OPERATOR, GraphBuilder, finish_model

    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}.")
    graph = GraphBuilder(opset)
    float_type = onnx.TensorProto.FLOAT
    if structure.takes_ids:
        inputs = [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.INT32,
                                                     ["batch"])]
    else:
        inputs = [onnx.helper.make_tensor_value_info(
            INPUT_NAME, float_type, ["batch", structure.input_shape[2]])]
    states = step_states(structure)
    inputs += [onnx.helper.make_tensor_value_info(state_input_name(i), float_type, ["batch", units])
               for i, (_, units) in enumerate(states)]
    outputs = []
    if attention is not None:
        inputs += [onnx.helper.make_tensor_value_info(
            input_name, float_type, ["batch", "source_steps", attention.units])
            for input_name in ("encoder_outputs", "encoder_keys")]
        inputs.append(onnx.helper.make_tensor_value_info("source_mask", float_type,
                                                         ["batch", "source_steps"]))
    axis0 = graph.constant("axes", np.array([0], np.int64))
    values, index, new_states = INPUT_NAME, 0, []
    for layer in structure.layers:
        if isinstance(layer, Embedding):
            values = graph.node("Gather", [graph.constant("embeddings", layer.table), values],
                                "embedded", axis=0)
        elif isinstance(layer, Recurrent):
            # X (1, batch, features); initial_h / initial_c (1, batch, units)
            x = graph.node("Unsqueeze", [values, axis0], "x")
            operator_inputs, attributes = graph.operator_inputs(layer.name, [layer], x, "forward")
            operator_inputs += ["", graph.node("Unsqueeze", [state_input_name(index), axis0], "h0")]
            if layer.cell == "lstm":
                operator_inputs.append(graph.node("Unsqueeze", [state_input_name(index + 1), axis0],
                                                  "c0"))
            count = 3 if layer.cell == "lstm" else 2
            results = graph.node(OPERATOR[layer.cell], operator_inputs, OPERATOR[layer.cell],
                                 outputs=count, **attributes)
            finals = [graph.node("Squeeze", [result, axis0], "state") for result in results[1:]]
            new_states += finals
            index += len(finals)
            values = finals[0]
        elif isinstance(layer, (Dense, Activation)):
            if isinstance(layer, Dense) and attention is not None:
                context, weights = _attend_onnx(graph, attention, values)
                values = graph.node("Concat", [values, context], "decoder_and_context", axis=-1)
                graph.nodes.append(onnx.helper.make_node("Identity", [weights], [ATTENTION_NAME]))
                outputs.append(onnx.helper.make_tensor_value_info(
                    ATTENTION_NAME, float_type, ["batch", "source_steps"]))
            values = graph.head(layer, values)
    graph.nodes.append(onnx.helper.make_node("Identity", [values], [OUTPUT_NAME]))
    outputs.insert(0, onnx.helper.make_tensor_value_info(OUTPUT_NAME, float_type,
                                                         ["batch", None]))
    for i, (state, (_, units)) in enumerate(zip(new_states, states)):
        graph.nodes.append(onnx.helper.make_node("Identity", [state], [state_output_name(i)]))
        outputs.append(onnx.helper.make_tensor_value_info(state_output_name(i), float_type,
                                                          ["batch", units]))
    graph_proto = onnx.helper.make_graph(graph.nodes, name, inputs, outputs,
                                         initializer=graph.initializers)
    return finish_model(graph_proto, opset, metadata)


def _attend_onnx(graph, attention, query_state: str):
    """`_attend` as ONNX nodes on the graph inputs encoder_outputs / encoder_keys /
    source_mask; returns the (context, weights) tensor names."""
    query = graph.node("Add", [graph.node("MatMul", [query_state, graph.constant(
        "query_kernel", attention.query_kernel)]), graph.constant("query_bias", attention.query_bias)],
        "query")
    query = graph.node("Unsqueeze", [query, graph.constant("axes", np.array([1], np.int64))])
    energy = graph.node("Tanh", [graph.node("Add", [query, "encoder_keys"])])
    scaled = graph.node("Mul", [energy, graph.constant("scale", attention.scale)])
    scores = graph.node("ReduceSum", [scaled, graph.constant("axes", np.array([-1], np.int64))],
                        "scores", keepdims=0)
    # padding steps (mask 0) get score - 1e9, as Keras does: no weight after the softmax
    penalty = graph.node("Mul", [graph.node("Sub", [graph.constant("one", np.array(1, np.float32)),
                                                    "source_mask"]),
                                 graph.constant("big", np.array(1e9, np.float32))])
    weights = graph.node("Softmax", [graph.node("Sub", [scores, penalty])], "weights", axis=-1)
    context = graph.node("MatMul", [graph.node("Unsqueeze", [weights, graph.constant(
        "axes", np.array([1], np.int64))]), "encoder_outputs"])
    context = graph.node("Squeeze", [context, graph.constant("axes", np.array([1], np.int64))],
                         "context")
    return context, weights
