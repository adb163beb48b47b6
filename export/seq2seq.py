"""A trained `keras_rnn.seq2seq` translator -> an encoder file and a decoder *step* file, in
TFLite and/or ONNX, that `export.runtime.Translator` decodes greedily without TensorFlow.

Both files are built from the model's own layers and go through the usual paths: the encoder is
a Keras sub-model (source ids -> `encoder_outputs`, `source_mask` (1 = word, 0 = `<pad>`),
`encoder_keys` (the attention's key projection, computed once per sentence instead of once per
written word) and `final_state_0...`, the decoder's starting state) written by
`export_tflite` / `export_onnx`; the decoder step (the last written word id `inputs`, the state
`state_0...` and, with attention, the three encoder tensors -> next-word probabilities
`outputs`, `next_state_0...` and `attention_weights`) is a Keras model of the decoder's layers
written by `export.streaming`, the encoder tensors its context inputs, fed whole at every step.
The attention is the model's own `AdditiveAttention` layer, converted as Keras computes it.

TFLite files have a fixed batch of 1 and a fixed source length (the longest training sentence
unless `source_len` says otherwise; shorter sentences are padded and masked). ONNX files take
any batch and length. The vocabularies, which the Keras model carries (see
`keras_rnn.seq2seq.vocabularies`), travel in the files' metadata.
"""

from __future__ import annotations

from pathlib import Path

from export._files import check_writable, staged_in, write_atomic
from export.runtime import MAIN_INPUT, MAIN_OUTPUT
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import UnsupportedModelError

ATTENTION_NAME = "attention_weights"
CONTEXT_INPUTS = ("encoder_outputs", "encoder_keys", "source_mask")  # the decoder step's
LAYERS = ("source_embedding", "encoder", "target_embedding", "decoder", "head")


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
    from export.onnx.exporter import DEFAULT_OPSET, build_onnx
    from export.streaming import graph_step_onnx, graph_step_tflite
    from export.tflite.exporter import build_tflite
    from keras_rnn.seq2seq import vocabularies

    path = Path(path)
    if path.suffix not in (".tflite", ".onnx"):
        raise ValueError(f"Translator path {str(path)!r} must end in .tflite or .onnx "
                         "(the format of both files).")
    try:
        source, target, longest_source, most_words = vocabularies(model)
    except ValueError as error:
        raise UnsupportedModelError(str(error)) from None
    source_len = source_len or longest_source
    tflite = path.suffix == ".tflite"
    encoder, decoder, context = translator_models(model, source_len if tflite else None)
    metadata = {"source_vocabulary": source.to_json(), "vocabulary": target.to_json(),
                "max_length": str(most_words)}
    stem = path.name[:-len(path.suffix)]
    encoder_path = check_writable(path.with_name(f"{stem}.encoder{path.suffix}"), suffix=path.suffix)
    decoder_path = check_writable(path.with_name(f"{stem}.decoder{path.suffix}"), suffix=path.suffix)
    if tflite:
        encoder = build_tflite(encoder, batch_size=1, seq_len=source_len, metadata=metadata)
        decoder = graph_step_tflite(decoder, batch_size=1, metadata=metadata,
                                    context_inputs=context)
    else:
        encoder = build_onnx(encoder, metadata=metadata).SerializeToString()
        decoder = graph_step_onnx(decoder, opset=DEFAULT_OPSET, metadata=metadata,
                                  context_inputs=context).SerializeToString()
    # both files written beside each other first, then renamed together (all or none): a
    # failure never leaves a new encoder beside an old decoder
    with staged_in(encoder_path.parent if str(encoder_path.parent) else Path(".")) as staging:
        staged = [write_atomic(staging.path(final.name), data)
                  for final, data in ((encoder_path, encoder), (decoder_path, decoder))]
        return staging.publish(staged)


def translator_models(model, source_len: int | None):
    """`(encoder, decoder step model, its context inputs)`: Keras models of the translator's
    own layers (a copy of them: the user's model keeps one call per layer). The decoder step
    model reads a sequence of target ids without `initial_state` (the step model takes the
    state as `state_N`, the encoder's `final_state_N` at the first word) and, with attention,
    the encoder tensors as inputs (of `source_len` steps; None: any)."""
    load_tensorflow()
    import keras

    try:
        for name in LAYERS:
            model.get_layer(name)
    except ValueError as error:
        raise UnsupportedModelError(
            f"Model {model.name!r} is not a keras_rnn seq2seq model ({error}); build it with "
            "keras_rnn.seq2seq.build_seq2seq.") from None
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    layer = copy.get_layer
    attention = "attention" in [each.name for each in copy.layers]

    def named(name, tensor):
        return keras.layers.Identity(name=name)(tensor)

    # the encoder: the copy's own graph from its source input
    source = copy.get_layer("source_embedding").input
    encoder_outputs, *states = layer("encoder").output
    outputs = [named("encoder_outputs", encoder_outputs),
               named("source_mask", keras.ops.cast(keras.ops.not_equal(source, 0), "float32"))]
    if attention:
        outputs.append(named("encoder_keys", layer("attention_key").output))
    outputs += [named(f"final_state_{index}", state) for index, state in enumerate(states)]
    encoder = keras.Model(source, outputs, name=f"{model.name}_encoder")

    # the decoder step: the decoder's layers called again, on inputs of their own
    words = keras.Input((None,), dtype="int32", name=MAIN_INPUT)
    decoded = layer("decoder")(layer("target_embedding")(words))
    inputs, features, outputs, context = [words], decoded, [], ()
    if attention:
        units = encoder_outputs.shape[-1]
        context = CONTEXT_INPUTS
        given = [keras.Input((source_len, units), name=CONTEXT_INPUTS[0]),
                 keras.Input((source_len, units), name=CONTEXT_INPUTS[1]),
                 keras.Input((source_len,), name=CONTEXT_INPUTS[2])]
        attended, weights = layer("attention")(
            [layer("attention_query")(decoded), given[0], given[1]],
            mask=[None, keras.ops.greater(given[2], 0.5)], return_attention_scores=True)
        features = layer("decoder_and_context")([decoded, attended])
        inputs += given
        outputs.append(named(ATTENTION_NAME, weights))
    outputs.insert(0, named(MAIN_OUTPUT, layer("head")(features)))
    decoder = keras.Model(inputs, outputs if attention else outputs[0],
                          name=f"{model.name}_decoder_step")
    return encoder, decoder, context
