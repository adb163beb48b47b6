"""A trained `keras_rnn.seq2seq` translator -> an encoder file and a decoder *step* file, in
TFLite and/or ONNX, that `export.runtime.Translator` decodes greedily without TensorFlow.

Encoder: `source` ids `(batch, source steps)` -> `encoder_outputs` `(batch, steps, units)`,
`source_mask` (1 = word, 0 = `<pad>`), `encoder_keys` (the attention's key projection, computed
once per sentence instead of once per written word) and `final_state_0...`, the decoder's
starting state. Decoder step: `inputs` (the last written word id), `state_0...` (and, with
attention, the three encoder tensors) -> `outputs` (next-word probabilities),
`next_state_0...` and `attention_weights`.

TFLite files have a fixed batch of 1 and a fixed source length (the longest training sentence
unless `source_len` says otherwise; shorter sentences are padded and masked). ONNX files take
any batch and length. The vocabularies, which the Keras model carries (see
`keras_rnn.seq2seq.vocabularies`), travel in the files' metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export._files import check_writable, staged_in, write_atomic
from export.structure import ModelStructure, UnsupportedModelError, describe_layer

SOURCE_NAME = "source"


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
    from export.onnx import DEFAULT_OPSET
    from export.step import step_onnx, step_tflite, with_states
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
        decoder = step_tflite(parts.decoder_structure, batch_size=1, metadata=metadata,
                              attention=parts.attention, source_len=source_len)
    else:
        encoder = _encoder_onnx(parts, DEFAULT_OPSET, metadata).SerializeToString()
        decoder = step_onnx(parts.decoder_structure, name=f"{stem}_decoder_step",
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

    from export.tflite import add_metadata, convert_function, dense_op, unrolled_recurrent

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

    from export.onnx import OPERATOR, GraphBuilder, finish_model

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
    results = graph.node(OPERATOR[encoder.cell], operator_inputs + [lengths],
                         OPERATOR[encoder.cell], outputs=1 + 1 + (encoder.cell == "lstm"),
                         **attributes)
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
