"""Encoder-decoder (seq2seq) translation, with optional additive (Bahdanau) attention.

The lecture's model (T2 lab 12-5): source words -> Embedding -> encoder RNN, whose final state
starts the decoder RNN; target words (teacher forcing: the decoder reads `<bos> y1 y2 ...` and
learns to write `y1 y2 ... <eos>`) -> Embedding -> decoder RNN -> Dense(softmax) over the target
vocabulary. With attention, every decoder output s_t also looks at all encoder outputs h_j:

    score(t, j) = v . tanh(W_q s_t + b + W_k h_j)      (additive, Bahdanau)
    a(t, :) = softmax(score(t, :)) over the real (unpadded) source words
    context_t = sum_j a(t, j) h_j;    y_t = softmax(W [s_t ; context_t] + c)

The query is the decoder's output at step t (as `keras.layers.AdditiveAttention` is used in
Keras's own NMT examples) rather than its previous state, so the whole target trains in one
pass; the score is the lecture's additive one.

Layers are named (`source_embedding`, `encoder`, `target_embedding`, `decoder`,
`attention_query`, `attention_key`, `attention`, `head`) so that `export.seq2seq` can read
them. Padding: id 0 (`<pad>`) is masked in both embeddings; the loss skips padded targets.

The model carries what translating and exporting it need: both embeddings are
`VocabularyEmbedding` layers that keep their vocabulary (and the longest source sentence, the
longest translation written) in their config, and the attention weights are read from the
attention layer's own output. So a model saved with `model.save("t.keras")` and loaded with
`keras.saving.load_model` (after `import keras_rnn.seq2seq`, which registers the layer)
translates, shows its attention and exports with nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_rnn.cells import keras_layer_class
from keras_rnn.models import CELLS
from keras_rnn.quiet import load_tensorflow
from keras_rnn.vocab import Vocabulary

load_tensorflow()  # quietly, before Keras: the layer below is defined on import
import keras  # noqa: E402


@dataclass
class TranslationData:
    """Encoded training pairs."""

    source: Vocabulary
    target: Vocabulary  # with <pad>, <bos>, <eos>
    source_ids: np.ndarray  # (pairs, source length), <pad> at the end
    decoder_inputs: np.ndarray  # (pairs, target length + 1): <bos> y1 ... yn <pad>...
    decoder_targets: np.ndarray  # (pairs, target length + 1): y1 ... yn <eos> <pad>...

    @property
    def max_length(self) -> int:
        """How many words greedy decoding writes at most before giving up on `<eos>`."""
        return self.decoder_inputs.shape[1] + 2


def translation_data(pairs) -> TranslationData:
    """Word vocabularies (sorted) and teacher-forcing arrays for `(source, target)` pairs."""
    sources = [source for source, _ in pairs]
    targets = [target for _, target in pairs]
    source = Vocabulary.from_texts(sources, level="word", pad=True)
    target = Vocabulary.from_texts(targets, level="word", pad=True, bos_eos=True)
    length = max(len(target.split(text)) for text in targets) + 1
    decoder_inputs = np.stack([
        _padded([target.bos_id, *target.encode(text)], length) for text in targets])
    decoder_targets = np.stack([
        _padded([*target.encode(text), target.eos_id], length) for text in targets])
    return TranslationData(source, target, source.encode_batch(sources),
                           decoder_inputs, decoder_targets)


def _padded(ids, length: int) -> np.ndarray:
    return np.asarray(list(ids) + [0] * (length - len(ids)), np.int32)


@keras.saving.register_keras_serializable(package="keras_rnn")
class VocabularyEmbedding(keras.layers.Embedding):
    """An `Embedding` over a vocabulary's ids that keeps the vocabulary in its config (as
    Keras's `StringLookup` keeps its own), with `max_length`: the most words this side of the
    translator handles (the longest source sentence; the longest translation written)."""

    def __init__(self, input_dim, output_dim, *, vocabulary: str, max_length: int, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.vocabulary = Vocabulary.from_json(vocabulary)
        if len(self.vocabulary) != input_dim:
            raise ValueError(f"VocabularyEmbedding {self.name!r}: input_dim {input_dim} != "
                             f"{len(self.vocabulary)} symbols in its vocabulary.")
        self.max_length = int(max_length)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary.to_json(),
                "max_length": self.max_length}


def vocabularies(model) -> tuple[Vocabulary, Vocabulary, int, int]:
    """`(source vocabulary, target vocabulary, longest source sentence, most words written)`
    of a `build_seq2seq` model, read from its embedding layers."""
    layers = {layer.name: layer for layer in model.layers}
    source, target = layers.get("source_embedding"), layers.get("target_embedding")
    if not isinstance(source, VocabularyEmbedding) or not isinstance(target, VocabularyEmbedding):
        raise ValueError(
            f"Model {model.name!r} carries no vocabularies (no VocabularyEmbedding layers "
            "'source_embedding' and 'target_embedding'): build it with build_seq2seq.")
    return source.vocabulary, target.vocabulary, source.max_length, target.max_length


def build_seq2seq(cell: str, data: TranslationData, *, embedding_dim: int = 32,
                  units: int = 32, attention: bool = False, name: str | None = None):
    """The training model: `[source ids, decoder input ids] -> (batch, steps, target words)`
    probabilities, with `data`'s vocabularies inside (see `vocabularies`)."""

    if cell not in CELLS:
        raise ValueError(f"Unknown cell {cell!r}: expected one of {', '.join(map(repr, CELLS))}.")
    recurrent = keras_layer_class(cell)
    source = keras.Input((None,), dtype="int32", name="source")
    decoder_input = keras.Input((None,), dtype="int32", name="decoder_input")
    embedded = VocabularyEmbedding(len(data.source), embedding_dim, mask_zero=True,
                                   vocabulary=data.source.to_json(),
                                   max_length=data.source_ids.shape[1],
                                   name="source_embedding")(source)
    encoder_outputs, *states = recurrent(units, return_sequences=True, return_state=True,
                                         name="encoder")(embedded)
    target_embedded = VocabularyEmbedding(len(data.target), embedding_dim, mask_zero=True,
                                          vocabulary=data.target.to_json(),
                                          max_length=data.max_length,
                                          name="target_embedding")(decoder_input)
    decoder_outputs = recurrent(units, return_sequences=True, name="decoder")(
        target_embedded, initial_state=states)
    features = decoder_outputs
    if attention:
        query = keras.layers.Dense(units, name="attention_query")(decoder_outputs)
        key = keras.layers.Dense(units, use_bias=False, name="attention_key")(encoder_outputs)
        source_mask = keras.ops.not_equal(source, 0)
        context, _ = keras.layers.AdditiveAttention(use_scale=True, name="attention")(
            [query, encoder_outputs, key], mask=[None, source_mask],
            return_attention_scores=True)
        features = keras.layers.Concatenate(name="decoder_and_context")(
            [decoder_outputs, context])
    probabilities = keras.layers.Dense(len(data.target), activation="softmax",
                                       name="head")(features)
    return keras.Model([source, decoder_input], probabilities,
                       name=name or f"seq2seq_{cell}{'_attention' if attention else ''}")


def attention_weights(model, sentence: str, words) -> np.ndarray:
    """The attention weights `(len(words) + 1, source words)` of a trained attention model
    while it reads `<bos> words...` for `sentence`: row t is where it looked to write word t.
    Read from the attention layer's own output, so a loaded model gives them too."""

    if "attention" not in [layer.name for layer in model.layers]:
        raise ValueError(f"Model {model.name!r} has no attention layer.")
    source, target, _, _ = vocabularies(model)
    weights = keras.Model(model.inputs, model.get_layer("attention").output[1])
    decoder_input = [target.bos_id] + [target.id_of(word) for word in words]
    return np.asarray(weights([source.encode(sentence)[None],
                               np.asarray([decoder_input], np.int32)], training=False))[0]


def translate(model, sentence: str, *, max_length: int | None = None):
    """Greedy decoding with the Keras model: start from `<bos>`, feed the words written so far,
    take the most likely next word, stop at `<eos>` (or after `max_length` words).

    Returns:
        The target words written, `<eos>` included when the model wrote it.

    Raises:
        ValueError: for a word the source vocabulary does not hold, naming it.
    """
    source, target, _, most_words = vocabularies(model)
    source_ids = source.encode(sentence)[None]
    max_length = max_length or most_words
    written = [target.bos_id]
    for _ in range(max_length):
        probabilities = np.asarray(model([source_ids, np.asarray([written], np.int32)], training=False))
        written.append(int(probabilities[0, -1].argmax()))
        if written[-1] == target.eos_id:
            break
    return [target.symbols[i] for i in written[1:]]
