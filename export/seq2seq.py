"""A trained `keras_rnn.seq2seq` translator -> an encoder file and a decoder *step* file, in
TFLite and/or ONNX, that `export.runtime.Translator` decodes greedily without TensorFlow.

Encoder: `source` ids `(batch, source steps)` -> `encoder_outputs` `(batch, steps, units)`,
`source_mask` (1 = word, 0 = `<pad>`), `encoder_keys` (the attention's key projection, computed
once per sentence instead of once per written word) and `final_state_0...`, the decoder's
starting state. Decoder step: `inputs` (the last written word id), `state_0...` (and, with
attention, the three encoder tensors) -> `outputs` (next-word probabilities),
`next_state_0...` and `attention_weights`.

The decoder step is written here by hand (`decoder_step_tflite`, `decoder_step_onnx`: the
chain embedding -> recurrent cell -> attention -> head, one step): every other model's step
goes through `export.streaming`'s general path.

TFLite files have a fixed batch of 1 and a fixed source length (the longest training sentence
unless `source_len` says otherwise; shorter sentences are padded and masked). ONNX files take
any batch and length. The vocabularies, which the Keras model carries (see
`keras_rnn.seq2seq.vocabularies`), travel in the files' metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export._files import check_writable, staged_in, write_atomic
from export.model.state import state_labels
from export.runtime import MAIN_INPUT, MAIN_OUTPUT, state_input_name, state_output_name
from export.streaming import STATES_METADATA
from keras_rnn.cells import cell
from keras_rnn.structure import (
    Activation,
    Dense,
    Embedding,
    ModelStructure,
    Recurrent,
    UnsupportedModelError,
    describe_layer,
)

SOURCE_NAME = "source"
INPUT_NAME, OUTPUT_NAME = MAIN_INPUT, MAIN_OUTPUT  # what export.runtime.StepModel reads
ATTENTION_NAME = "attention_weights"


@dataclass(frozen=True)
class Attention:
    """The additive attention's weights (see `keras_rnn.seq2seq`)."""

    query_kernel: np.ndarray  # (units, units)
    query_bias: np.ndarray  # (units,)
    key_kernel: np.ndarray  # (units, units)
    scale: np.ndarray  # (units,): the v of v . tanh(...)

    @property
    def units(self) -> int:
        return self.key_kernel.shape[0]


@dataclass(frozen=True)
class TranslatorParts:
    """The parts of a trained seq2seq model the exported files need."""

    source_embedding: object  # structure.Embedding
    encoder: object  # structure.Recurrent
    decoder_structure: ModelStructure  # target embedding -> decoder RNN -> head
    attention: Attention | None


def read_translator(model) -> TranslatorParts:
    """Reads a model built by `keras_rnn.seq2seq.build_seq2seq`."""
    try:
        layers = {name: model.get_layer(name) for name in (
            "source_embedding", "encoder", "target_embedding", "decoder", "head")}
    except ValueError as error:
        raise UnsupportedModelError(
            f"Model {model.name!r} is not a keras_rnn seq2seq model ({error}); build it with "
            "keras_rnn.seq2seq.build_seq2seq."
        ) from error
    attention = None
    if any(layer.name == "attention" for layer in model.layers):
        key = model.get_layer("attention_key")
        query = model.get_layer("attention_query")
        scale = model.get_layer("attention").scale
        attention = Attention(
            query_kernel=np.asarray(query.kernel.numpy(), np.float32),
            query_bias=np.asarray(query.bias.numpy(), np.float32),
            key_kernel=np.asarray(key.kernel.numpy(), np.float32),
            scale=np.asarray(scale.numpy(), np.float32),
        )
    decoder = describe_layer(layers["decoder"])
    structure = ModelStructure((None, None), "int32", (
        describe_layer(layers["target_embedding"]), decoder, describe_layer(layers["head"])))
    return TranslatorParts(describe_layer(layers["source_embedding"]),
                      describe_layer(layers["encoder"]), structure, attention)


def export_translator(model, path, *, source_len: int | None = None) -> list[Path]:
    """Writes the encoder and the decoder step of a translator, in the format of `path`'s
    suffix: `t.tflite` -> `t.encoder.tflite` and `t.decoder.tflite` (`.onnx` alike).

    Args:
        model: a trained `keras_rnn.seq2seq.build_seq2seq` model, or one loaded from a
            `.keras` file: the vocabularies travel in it.
        source_len: the TFLite encoder's fixed number of source words (default: the longest
            training sentence).

    Returns:
        `[encoder path, decoder path]`. A failed export removes what this call wrote.
    """
    from export.onnx.exporter import DEFAULT_OPSET
    from keras_rnn.seq2seq import vocabularies

    path = Path(path)
    if path.suffix not in (".tflite", ".onnx"):
        raise ValueError(f"Translator path {str(path)!r} must end in .tflite or .onnx "
                         "(the format of both files).")
    try:
        source, target, longest_source, most_words = vocabularies(model)
    except ValueError as error:
        raise UnsupportedModelError(str(error)) from None
    parts = read_translator(model)
    source_len = source_len or longest_source
    metadata = with_states(parts.decoder_structure, {
        "source_vocabulary": source.to_json(),
        "vocabulary": target.to_json(),
        "max_length": str(most_words),
    })
    stem = path.name[:-len(path.suffix)]
    encoder_path = check_writable(path.with_name(f"{stem}.encoder{path.suffix}"), suffix=path.suffix)
    decoder_path = check_writable(path.with_name(f"{stem}.decoder{path.suffix}"), suffix=path.suffix)
    if path.suffix == ".tflite":
        encoder = _encoder_tflite(parts, source_len, metadata)
        decoder = decoder_step_tflite(parts.decoder_structure, batch_size=1, metadata=metadata,
                              attention=parts.attention, source_len=source_len)
    else:
        encoder = _encoder_onnx(parts, DEFAULT_OPSET, metadata).SerializeToString()
        decoder = decoder_step_onnx(parts.decoder_structure, name=f"{stem}_decoder_step",
                            opset=DEFAULT_OPSET, metadata=metadata,
                            attention=parts.attention).SerializeToString()
    # both files written beside each other first, then renamed together (all or none): a
    # failure never leaves a new encoder beside an old decoder
    with staged_in(encoder_path.parent if str(encoder_path.parent) else Path(".")) as staging:
        staged = [write_atomic(staging.path(final.name), data)
                  for final, data in ((encoder_path, encoder), (decoder_path, decoder))]
        return staging.publish(staged)


def _encoder_tflite(parts: TranslatorParts, source_len: int, metadata: dict) -> bytes:
    import tensorflow as tf

    from export.tflite.flatbuffer import add_metadata, convert_function
    from export.tflite.forms import dense_op, unrolled_recurrent

    def encode(source):
        mask = tf.not_equal(source, 0)
        embedded = tf.gather(tf.constant(parts.source_embedding.table), source)
        encoder_outputs, states = unrolled_recurrent(parts.encoder, embedded, mask, return_state=True)
        outputs = {"encoder_outputs": encoder_outputs,
                   "source_mask": tf.cast(mask, tf.float32)}
        if parts.attention is not None:
            outputs["encoder_keys"] = dense_op(
                encoder_outputs, parts.attention.key_kernel,
                np.zeros(parts.attention.units, np.float32))
        outputs.update({f"final_state_{i}": state for i, state in enumerate(states)})
        return outputs

    spec = [tf.TensorSpec((1, source_len), tf.int32, name=SOURCE_NAME)]
    flatbuffer = convert_function(encode, spec, ModelStructure(
        (1, source_len), "int32", (parts.source_embedding, parts.encoder)))
    return add_metadata(flatbuffer, metadata)


def _encoder_onnx(parts: TranslatorParts, opset: int, metadata: dict):
    import onnx

    from export.onnx.exporter import finish_model
    from export.onnx.operators import GraphBuilder

    graph = GraphBuilder(opset)
    float_type = onnx.TensorProto.FLOAT
    is_padding = graph.node("Equal", [SOURCE_NAME, graph.constant("zero", np.array(0, np.int32))])
    lengths = graph.sequence_lengths(is_padding)
    embedded = graph.node("Gather", [graph.constant("embeddings", parts.source_embedding.table),
                                     SOURCE_NAME], "embedded", axis=0)
    time_major = graph.node("Transpose", [embedded], "time_major", perm=[1, 0, 2])
    encoder = parts.encoder
    operator_inputs, attributes = graph.operator_inputs(encoder.name, [encoder], time_major,
                                                        "forward")
    kind = cell(encoder.cell)
    results = graph.node(kind.onnx_operator, operator_inputs + [lengths], kind.onnx_operator,
                         outputs=1 + kind.state_count(), **attributes)
    # Y (time, 1, batch, units) -> (batch, time, units). Steps after a row's last word are zeros
    # here (Keras repeats the last output there); the mask gives them no attention weight.
    sequence = graph.node("Squeeze", [results[0], graph.constant("axes", np.array([1], np.int64))])
    named = {"encoder_outputs": graph.node("Transpose", [sequence], perm=[1, 0, 2]),
             "source_mask": graph.node("Cast", [graph.node("Not", [is_padding])], to=float_type)}
    if parts.attention is not None:
        named["encoder_keys"] = graph.node("MatMul", [named["encoder_outputs"], graph.constant(
            "key_kernel", parts.attention.key_kernel)])
    for i, state in enumerate(results[1:]):
        named[f"final_state_{i}"] = graph.node(
            "Squeeze", [state, graph.constant("axes", np.array([0], np.int64))])
    outputs = []
    for output_name, tensor in named.items():
        graph.nodes.append(onnx.helper.make_node("Identity", [tensor], [output_name]))
        shape = {"encoder_outputs": ["batch", "source_steps", encoder.units],
                 "encoder_keys": ["batch", "source_steps", encoder.units],
                 "source_mask": ["batch", "source_steps"]}.get(output_name, ["batch", encoder.units])
        outputs.append(onnx.helper.make_tensor_value_info(output_name, float_type, shape))
    inputs = [onnx.helper.make_tensor_value_info(SOURCE_NAME, onnx.TensorProto.INT32,
                                                 ["batch", "source_steps"])]
    graph_proto = onnx.helper.make_graph(graph.nodes, "encoder", inputs, outputs,
                                         initializer=graph.initializers)
    return finish_model(graph_proto, opset, metadata)


# -- the decoder step, by hand ----------------------------------------------------------------

def step_states(structure) -> list[tuple[str, int]]:
    """`(label, units)` for each state the step model carries, in order."""
    return [state for layer in structure.layers if isinstance(layer, Recurrent)
            for state in state_labels(layer.name, layer)]


def with_states(structure, metadata):
    entries = dict(metadata or {})
    entries[STATES_METADATA] = json.dumps(step_states(structure))
    return entries


def decoder_step_tflite(structure, *, batch_size: int, metadata: dict | None, attention=None,
                source_len: int | None = None) -> bytes:
    """Converts one step of `structure` (Embedding/Recurrent/Dense/Activation layers) to
    TFLite; with `attention` (see `export.seq2seq`) the last recurrent output also attends over
    `encoder_outputs` (batch, source_len, units) before the head."""
    import tensorflow as tf

    from export.tflite.flatbuffer import add_metadata, convert_function
    from export.tflite.forms import activation_op, cell_step, dense_op, input_bias

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
                given = [carried.pop(0) for _ in range(cell(layer.cell).state_count())]
                given = cell_step(layer, dense_op(values, layer.kernel, input_bias(layer)), given)
                new_states += given
                values = given[0]
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


def decoder_step_onnx(structure, *, name: str, opset: int, metadata: dict | None, attention=None):
    """One step of `structure` as an ONNX model (dynamic batch; with `attention`, dynamic
    source length too); see `decoder_step_tflite`."""
    import onnx

    from export.onnx.exporter import MAX_OPSET, MIN_OPSET, finish_model
    from export.onnx.operators import GraphBuilder

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
            kind = cell(layer.cell)
            # initial_h (and initial_c): (1, batch, units)
            operator_inputs += [""] + [
                graph.node("Unsqueeze", [state_input_name(index + k), axis0], f"{state}0")
                for k, state in enumerate(kind.states)]
            results = graph.node(kind.onnx_operator, operator_inputs, kind.onnx_operator,
                                 outputs=1 + kind.state_count(), **attributes)
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
