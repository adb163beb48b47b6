"""A corpus of RNN architectures people train, rebuilt from public Keras code (sources cited per
case; the model-building code is written here, at small sizes, with seeded random weights).

Every case is exported to TFLite and ONNX, then (1) `verify` must pass and (2) an independent
comparison runs each file in LiteRT and ONNX Runtime on the case's own inputs (pre-padded ids,
images, several inputs...) against Keras. The ONNX graphs of the built-in cells hold their
native operators and no `Loop`/`Scan` (asserted); custom cells and ConvLSTM go through the
standard converters' loops, and the files say so (`recurrent_forms` metadata).
"""

import json

import numpy as np
import pytest
from anchors import anchor_correct
from helpers import assert_outputs_close, runtimes_for

from export import export_onnx, export_tflite, verify
from export.model.signature import exportable, half_precision, input_specs, keras_outputs
from export.parity.tolerances import HALF_PRECISION_TOLERANCE, ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import FORMS_METADATA, load

pytestmark = pytest.mark.slow  # 54 architectures, each converted twice and compared
BATCH = 2  # the TFLite files' fixed batch


def _layers():
    import keras

    return keras, keras.layers


def _ids(rng, shape, vocabulary, padding="pre"):
    """Token ids 1..vocabulary-1, padded with 0 at the start (pad_sequences' default), the end
    or in the middle of each row."""
    ids = rng.integers(1, vocabulary, shape).astype(np.int32)
    for row in range(shape[0]):
        cut = int(rng.integers(1, shape[1]))
        if padding == "pre":
            ids[row, :cut] = 0
        elif padding == "post":
            ids[row, cut:] = 0
        else:
            ids[row, rng.choice(shape[1], size=max(1, shape[1] // 3), replace=False)] = 0
    return ids


def _floats(rng, shape):
    return rng.normal(size=shape).astype(np.float32)


# Each builder returns (model, {input name: array}) for inputs of batch BATCH.

def bidirectional_lstm_imdb(rng):
    # keras-io examples/nlp/bidirectional_lstm_imdb.py
    keras, layers = _layers()
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(200, 16)(inputs)
    x = layers.Bidirectional(layers.LSTM(16, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(16))(x)
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))
    return model, [_ids(rng, (BATCH, 20), 200, padding="none")]


def addition_rnn(rng):
    # keras-io examples/nlp/addition_rnn.py: LSTM encoder, RepeatVector, LSTM decoder
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((7, 12)), layers.LSTM(32), layers.RepeatVector(4),
        layers.LSTM(32, return_sequences=True), layers.Dense(12, activation="softmax")])
    chars = rng.integers(0, 12, (BATCH, 7))
    return model, [np.eye(12, dtype=np.float32)[chars]]


def lstm_seq2seq(rng):
    # keras-io examples/nlp/lstm_seq2seq.py: return_state encoder, initial_state decoder
    keras, layers = _layers()
    encoder_inputs = keras.Input(shape=(None, 9), name="encoder_inputs")
    _, state_h, state_c = layers.LSTM(16, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, 11), name="decoder_inputs")
    decoder = layers.LSTM(16, return_sequences=True)(decoder_inputs,
                                                     initial_state=[state_h, state_c])
    outputs = layers.Dense(11, activation="softmax")(decoder)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    return model, [np.eye(9, dtype=np.float32)[rng.integers(0, 9, (BATCH, 6))],
                   np.eye(11, dtype=np.float32)[rng.integers(0, 11, (BATCH, 6))]]


def weather_forecasting(rng):
    # keras-io examples/timeseries/timeseries_weather_forecasting.py
    keras, layers = _layers()
    inputs = keras.Input(shape=(24, 7))
    model = keras.Model(inputs, layers.Dense(1)(layers.LSTM(16)(inputs)))
    return model, [_floats(rng, (BATCH, 24, 7))]


def forda_conv_gru(rng):
    # keras-io examples/timeseries/timeseries_classification_from_scratch.py (FordA) front
    # end: Conv1D + BatchNormalization + ReLU, here followed by a GRU
    keras, layers = _layers()
    inputs = keras.Input((50, 1))
    x = layers.Conv1D(8, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GRU(8)(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    return model, [_floats(rng, (BATCH, 50, 1))]


def ctc_asr(rng):
    # keras-io examples/audio/ctc_asr.py (DeepSpeech2-like): Conv2D front end, Bi-GRU stack
    keras, layers = _layers()
    inputs = keras.Input((20, 16), name="spectrogram")
    x = layers.Reshape((20, 16, 1))(inputs)
    x = layers.Conv2D(4, (5, 5), strides=(2, 2), padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((10, 8 * 4))(x)
    for _ in range(2):
        x = layers.Bidirectional(layers.GRU(8, return_sequences=True, reset_after=True),
                                 merge_mode="concat")(x)
        x = layers.Dropout(0.5)(x)
    x = layers.Dense(16)(x)
    x = layers.ReLU()(x)
    model = keras.Model(inputs, layers.Dense(6, activation="softmax")(x))
    return model, [_floats(rng, (BATCH, 20, 16))]


def handwriting_recognition(rng):
    # keras-io examples/vision/handwriting_recognition.py: CNN, reshape, Bi-LSTM stack
    keras, layers = _layers()
    image = keras.Input((32, 16, 1), name="image")
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(image)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Reshape((8, 4 * 8))(x)
    x = layers.Dense(16, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Bidirectional(layers.LSTM(16, return_sequences=True, dropout=0.25))(x)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True, dropout=0.25))(x)
    model = keras.Model(image, layers.Dense(10, activation="softmax")(x))
    return model, [_floats(rng, (BATCH, 32, 16, 1))]


def video_classification(rng):
    # keras-io examples/vision/video_classification.py: frame features + an explicit mask
    keras, layers = _layers()
    frames = keras.Input((6, 12), name="frame_features")
    mask = keras.Input((6,), dtype="bool", name="frame_mask")
    x = layers.GRU(16, return_sequences=True)(frames, mask=mask)
    x = layers.GRU(8)(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(8, activation="relu")(x)
    model = keras.Model([frames, mask], layers.Dense(5, activation="softmax")(x))
    valid = np.ones((BATCH, 6), bool)
    valid[0, 4:] = False  # shorter video: padding at the end
    valid[1, 2] = False  # a dropped frame in the middle
    return model, [_floats(rng, (BATCH, 6, 12)), valid]


def conv_lstm(rng):
    # keras-io examples/vision/conv_lstm.py: ConvLSTM2D (the converter's loop form)
    keras, layers = _layers()
    inputs = keras.Input((3, 8, 8, 1))
    x = layers.ConvLSTM2D(4, (3, 3), padding="same", return_sequences=True,
                          activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inputs, layers.Conv3D(1, (3, 3, 3), activation="sigmoid",
                                              padding="same")(x))
    return model, [_floats(rng, (BATCH, 3, 8, 8, 1))]


def rnn_guide_lstm(rng):
    # keras-io guides/working_with_rnns.py: "Built-in RNN layers: a simple example"
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((None,), dtype="int32"), layers.Embedding(100, 8),
                              layers.LSTM(16), layers.Dense(10)])
    return model, [_ids(rng, (BATCH, 9), 100, padding="none")]


def rnn_guide_gru_simple_rnn(rng):
    # keras-io guides/working_with_rnns.py: GRU returning sequences into a SimpleRNN
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((None,), dtype="int32"), layers.Embedding(100, 8),
                              layers.GRU(16, return_sequences=True), layers.SimpleRNN(8),
                              layers.Dense(10)])
    return model, [_ids(rng, (BATCH, 9), 100, padding="none")]


def rnn_guide_encoder_decoder(rng):
    # keras-io guides/working_with_rnns.py: "RNN state reuse" (return_state, initial_state)
    keras, layers = _layers()
    encoder_input = keras.Input(shape=(None,), dtype="int32", name="encoder_tokens")
    encoder_embedded = layers.Embedding(50, 8)(encoder_input)
    output, state_h, state_c = layers.LSTM(16, return_state=True)(encoder_embedded)
    decoder_input = keras.Input(shape=(None,), dtype="int32", name="decoder_tokens")
    decoder_embedded = layers.Embedding(40, 8)(decoder_input)
    decoder_output = layers.LSTM(16)(decoder_embedded, initial_state=[state_h, state_c])
    model = keras.Model([encoder_input, decoder_input], layers.Dense(10)(decoder_output))
    return model, [_ids(rng, (BATCH, 7), 50, padding="none"),
                   _ids(rng, (BATCH, 7), 40, padding="none")]


def rnn_guide_cell_layer(rng):
    # keras-io guides/working_with_rnns.py: keras.layers.RNN(LSTMCell) instead of LSTM
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((10, 4)), layers.RNN(layers.LSTMCell(12)),
                              layers.Dense(3)])
    return model, [_floats(rng, (BATCH, 10, 4))]


def rnn_guide_bidirectional(rng):
    # keras-io guides/working_with_rnns.py: "Bidirectional RNNs"
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((5, 10)), layers.Bidirectional(layers.LSTM(16, return_sequences=True)),
        layers.Bidirectional(layers.LSTM(8)), layers.Dense(10)])
    return model, [_floats(rng, (BATCH, 5, 10))]


def stacked_rnn_cells(rng):
    # the keras.layers.StackedRNNCells docstring: RNN(StackedRNNCells([LSTMCell, LSTMCell])),
    # here with mixed cells over masked, pre-padded steps
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(30, 6, mask_zero=True),
        layers.RNN(layers.StackedRNNCells([layers.LSTMCell(8), layers.GRUCell(5),
                                           layers.SimpleRNNCell(4)]), return_sequences=True),
        layers.RNN(layers.StackedRNNCells([layers.GRUCell(6), layers.LSTMCell(3)])),
        layers.Dense(2)])
    return model, [_ids(rng, (BATCH, 9), 30, padding="pre")]


def custom_minimal_cell(rng):
    # the keras.layers.RNN docstring's MinimalRNNCell: a custom cell (the converter's loop)
    keras, layers = _layers()

    class MinimalRNNCell(layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units),
                                                    name="recurrent_kernel")

        def call(self, inputs, states):
            output = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(
                states[0], self.recurrent_kernel)
            return output, [output]

    model = keras.Sequential([keras.Input((6, 3)), layers.RNN(MinimalRNNCell(5)),
                              layers.Dense(2)])
    return model, [_floats(rng, (BATCH, 6, 3)) * 0.3]


def masking_guide_embedding(rng):
    # keras-io guides/understanding_masking_and_padding.py: Embedding(mask_zero) + LSTM on
    # pad_sequences' default pre-padding
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              layers.Embedding(5000, 16, mask_zero=True), layers.LSTM(32)])
    return model, [_ids(rng, (BATCH, 12), 5000, padding="pre")]


def masking_guide_masking_layer(rng):
    # keras-io guides/understanding_masking_and_padding.py: Masking layer on float inputs,
    # steps masked in the middle of rows
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((10, 8)), layers.Masking(mask_value=0.0),
                              layers.LSTM(16, return_sequences=True), layers.Dense(4)])
    x = _floats(rng, (BATCH, 10, 8))
    x[0, 3:5] = 0.0
    x[1, :2] = 0.0
    return model, [x]


def masking_guide_explicit_mask(rng):
    # keras-io guides/understanding_masking_and_padding.py: passing mask= by hand in the
    # functional API
    keras, layers = _layers()
    inputs = keras.Input(shape=(None,), dtype="int32")
    embedding = layers.Embedding(input_dim=5000, output_dim=16, mask_zero=True)
    x = embedding(inputs)
    mask = embedding.compute_mask(inputs)
    outputs = layers.GRU(32)(x, mask=mask)
    return keras.Model(inputs, outputs), [_ids(rng, (BATCH, 12), 5000, padding="middle")]


def tf2onnx_gru_variants(rng):
    # tf2onnx tests/keras2onnx_unit_tests/test_layers.py: GRU reset_after=False, go_backwards
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((8, 5)), layers.GRU(6, reset_after=False, return_sequences=True),
        layers.GRU(6, go_backwards=True, return_sequences=True), layers.Dense(2)])
    return model, [_floats(rng, (BATCH, 8, 5))]


def tf2onnx_simple_rnn_relu(rng):
    # tf2onnx tests/keras2onnx_unit_tests/test_layers.py: SimpleRNN with relu, no bias
    keras, layers = _layers()
    model = keras.Sequential([keras.Input((6, 4)),
                              layers.SimpleRNN(5, activation="relu", use_bias=False,
                                               return_sequences=True), layers.Dense(3)])
    return model, [_floats(rng, (BATCH, 6, 4)) * 0.5]


def tf2onnx_bidirectional_merges(rng):
    # tf2onnx tests/keras2onnx_unit_tests/test_layers.py: Bidirectional merge modes
    keras, layers = _layers()
    inputs = keras.Input((7, 4))
    outputs = [layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode=mode)(inputs)
               for mode in ("sum", "ave", "mul")]
    return keras.Model(inputs, layers.Concatenate()(outputs)), [_floats(rng, (BATCH, 7, 4))]


def keras_lstm_options(rng):
    # keras/src/layers/rnn/lstm_test.py: use_bias=False, unit_forget_bias, hard_sigmoid
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((6, 3)),
        layers.LSTM(4, use_bias=False, return_sequences=True),
        layers.LSTM(4, unit_forget_bias=False, recurrent_activation="hard_sigmoid"),
        layers.Dense(2)])
    return model, [_floats(rng, (BATCH, 6, 3))]


def attention_over_lstm(rng):
    # keras.layers.Attention docstring (query-value attention), with LSTM encoders
    keras, layers = _layers()
    query_input = keras.Input(shape=(None,), dtype="int32", name="query")
    value_input = keras.Input(shape=(None,), dtype="int32", name="value")
    embedding = layers.Embedding(input_dim=100, output_dim=8)
    query = layers.LSTM(8, return_sequences=True)(embedding(query_input))
    value = layers.LSTM(8, return_sequences=True)(embedding(value_input))
    attended = layers.Attention()([query, value])
    pooled = [layers.GlobalAveragePooling1D()(query), layers.GlobalAveragePooling1D()(attended)]
    model = keras.Model([query_input, value_input], layers.Dense(2)(layers.Concatenate()(pooled)))
    return model, [_ids(rng, (BATCH, 6), 100, padding="none"),
                   _ids(rng, (BATCH, 6), 100, padding="none")]


def multi_head_attention_on_bilstm(rng):
    # keras-io examples/nlp/text_classification_with_transformer.py, the attention block on a
    # Bi-LSTM encoder
    keras, layers = _layers()
    inputs = keras.Input((10,), dtype="int32")
    x = layers.Embedding(300, 16)(inputs)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x)
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = layers.LayerNormalization(epsilon=1e-6)(x + attended)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x)), [
        _ids(rng, (BATCH, 10), 300, padding="none")]


def bilstm_tagger(rng):
    # popular GitHub POS/NER taggers: Embedding(mask_zero), Bi-LSTM, TimeDistributed(Dense)
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(60, 8, mask_zero=True),
        layers.Bidirectional(layers.LSTM(8, return_sequences=True)),
        layers.TimeDistributed(layers.Dense(5, activation="softmax"))])
    return model, [_ids(rng, (BATCH, 11), 60, padding="post")]


def cnn_lstm_video(rng):
    # popular GitHub CNN-LSTM video models: TimeDistributed(Conv2D, pooling, Flatten) + LSTM
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((4, 12, 12, 3)),
        layers.TimeDistributed(layers.Conv2D(4, (3, 3), activation="relu")),
        layers.TimeDistributed(layers.MaxPooling2D((2, 2))),
        layers.TimeDistributed(layers.Flatten()),
        layers.LSTM(8), layers.Dense(3, activation="softmax")])
    return model, [_floats(rng, (BATCH, 4, 12, 12, 3))]


def cnn_lstm_timeseries(rng):
    # popular GitHub / machinelearningmastery CNN-LSTM forecasting: Conv1D, pooling, LSTM
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((16, 2)), layers.Conv1D(8, 3, activation="relu"), layers.MaxPooling1D(2),
        layers.LSTM(10, activation="relu"), layers.Dense(1)])
    return model, [_floats(rng, (BATCH, 16, 2)) * 0.3]


def lstm_autoencoder(rng):
    # popular GitHub / machinelearningmastery LSTM autoencoder: RepeatVector and
    # TimeDistributed(Dense)
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((9, 1)), layers.LSTM(16, activation="relu"), layers.RepeatVector(9),
        layers.LSTM(16, activation="relu", return_sequences=True),
        layers.TimeDistributed(layers.Dense(1))])
    return model, [_floats(rng, (BATCH, 9, 1)) * 0.3]


def stacked_gru_normalized(rng):
    # keras-io guides and common practice: stacked GRUs with LayerNormalization, Dropout and a
    # LeakyReLU layer
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((12, 6)), layers.GRU(12, return_sequences=True),
        layers.LayerNormalization(), layers.Dropout(0.2), layers.GRU(12),
        layers.Dense(8), layers.LeakyReLU(negative_slope=0.2), layers.Dense(1)])
    return model, [_floats(rng, (BATCH, 12, 6))]


def multi_output_trunk(rng):
    # keras-io guides/functional_api.py "models with multiple inputs and outputs": a shared
    # LSTM trunk with a classification and a regression head
    keras, layers = _layers()
    inputs = keras.Input((8, 5))
    trunk = layers.LSTM(12)(inputs)
    kind = layers.Dense(3, activation="softmax", name="kind")(trunk)
    amount = layers.Dense(1, name="amount")(trunk)
    return keras.Model(inputs, [kind, amount]), [_floats(rng, (BATCH, 8, 5))]


def ticket_classifier(rng):
    # keras-io guides/functional_api.py: the ticket classifier (title, body, tags ->
    # priority, department), with GRU/LSTM text encoders
    keras, layers = _layers()
    title_input = keras.Input(shape=(None,), dtype="int32", name="title")
    body_input = keras.Input(shape=(None,), dtype="int32", name="body")
    tags_input = keras.Input(shape=(4,), name="tags")
    title = layers.GRU(8)(layers.Embedding(100, 8)(title_input))
    body = layers.LSTM(8)(layers.Embedding(100, 8)(body_input))
    x = layers.concatenate([title, body, tags_input])
    priority = layers.Dense(1, name="priority")(x)
    department = layers.Dense(4, name="department")(x)
    model = keras.Model([title_input, body_input, tags_input], [priority, department])
    return model, [_ids(rng, (BATCH, 5), 100, padding="none"),
                   _ids(rng, (BATCH, 9), 100, padding="none"),
                   (rng.random((BATCH, 4)) > 0.5).astype(np.float32)]


def normalization_front(rng):
    # keras-io structured data and time-series examples: an adapted Normalization layer
    keras, layers = _layers()
    normalization = layers.Normalization()
    normalization.adapt(rng.normal(3.0, 2.0, size=(64, 10, 3)).astype(np.float32))
    model = keras.Sequential([keras.Input((10, 3)), normalization, layers.GRU(8),
                              layers.Dense(1)])
    return model, [rng.normal(3.0, 2.0, size=(BATCH, 10, 3)).astype(np.float32)]


def nested_encoder(rng):
    # keras-io guides/functional_api.py "all models are callable": a Sequential encoder
    # nested in a functional model
    keras, layers = _layers()
    encoder = keras.Sequential([keras.Input((None, 4)), layers.LSTM(8, return_sequences=True),
                                layers.GRU(6)], name="encoder")
    inputs = keras.Input((7, 4))
    return keras.Model(inputs, layers.Dense(2)(encoder(inputs))), [_floats(rng, (BATCH, 7, 4))]


def gru_states_as_outputs(rng):
    # keras.layers.GRU docstring: return_sequences and return_state, every output kept
    keras, layers = _layers()
    inputs = keras.Input((6, 3))
    sequence, state = layers.GRU(4, return_sequences=True, return_state=True)(inputs)
    backward = layers.Bidirectional(layers.LSTM(3, return_state=True))(inputs)
    return keras.Model(inputs, [sequence, state] + list(backward)), [_floats(rng, (BATCH, 6, 3))]


def causal_conv_bigru(rng):
    # the shape measured in the project's issue: causal Conv1D + Bi-GRU + LayerNormalization,
    # with a mask from the embedding flowing through
    keras, layers = _layers()
    inputs = keras.Input((None,), dtype="int32")
    x = layers.Embedding(40, 8)(inputs)
    x = layers.Conv1D(8, 3, padding="causal")(x)
    x = layers.Bidirectional(layers.GRU(6, return_sequences=True))(x)
    x = layers.LayerNormalization()(x)
    return keras.Model(inputs, layers.Dense(3)(x)), [_ids(rng, (BATCH, 10), 40, padding="none")]


# -- issue 16: the kinds a new user brought that the native forms did not take -------------------

def _under_policy(policy, build):
    """`build()` with the global dtype policy set to `policy`, restored after."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def text_generation_subclassed(rng):
    # TensorFlow tutorial "Text generation with an RNN" (tensorflow/text,
    # docs/tutorials/text_generation.ipynb): a subclassed MyModel with call(inputs,
    # states=None, return_state=False, training=False), called on data once
    keras, layers = _layers()

    class MyModel(keras.Model):
        def __init__(self, vocab_size, embedding_dim, rnn_units):
            super().__init__()
            self.embedding = layers.Embedding(vocab_size, embedding_dim)
            self.gru = layers.GRU(rnn_units, return_sequences=True, return_state=True)
            self.dense = layers.Dense(vocab_size)

        def call(self, inputs, states=None, return_state=False, training=False):
            x = self.embedding(inputs, training=training)
            x, states = self.gru(x, initial_state=states, training=training)
            x = self.dense(x, training=training)
            return (x, states) if return_state else x

    model = MyModel(30, 8, 12)
    ids = rng.integers(0, 30, (BATCH, 10)).astype(np.int32)
    model(ids)
    return model, [ids]


def siamese_manhattan_lstm(rng):
    # Siamese Manhattan LSTM (Mueller & Thyagarajan, AAAI 2016), as in likejazz/Siamese-LSTM
    # and keras-io siamese examples: one Embedding and one LSTM shared by both questions,
    # similarity exp(-|left - right|_1)
    keras, layers = _layers()
    left = keras.Input((None,), dtype="int32", name="left")
    right = keras.Input((None,), dtype="int32", name="right")
    embedding = layers.Embedding(50, 8, mask_zero=True)
    encoder = layers.LSTM(10)
    difference = keras.ops.abs(encoder(embedding(left)) - encoder(embedding(right)))
    similarity = keras.ops.exp(-keras.ops.sum(difference, axis=1, keepdims=True))
    return keras.Model([left, right], similarity), [_ids(rng, (BATCH, 9), 50, "pre"),
                                                     _ids(rng, (BATCH, 9), 50, "post")]


def mixed_float16_lstm(rng):
    # TensorFlow guide "Mixed precision" (guide/mixed_precision.ipynb): the layers under
    # mixed_float16, the output softmax kept in float32
    keras, layers = _layers()

    def build():
        inputs = keras.Input((12, 6))
        x = layers.LSTM(16, return_sequences=True)(inputs)
        x = layers.LSTM(8)(x)
        x = layers.Dense(4)(x)
        return keras.Model(inputs, layers.Activation("softmax", dtype="float32")(x))

    return _under_policy("mixed_float16", build), [_floats(rng, (BATCH, 12, 6))]


def float16_gru(rng):
    # Keras's own recurrent layer tests run the layers with dtype="float16"
    # (keras/src/layers/rnn/gru_test.py): a float16 input and GRU, a float32 head
    keras, layers = _layers()
    inputs = keras.Input((8, 5), dtype="float16")
    x = layers.GRU(8, dtype="float16")(inputs)
    return keras.Model(inputs, layers.Dense(3, dtype="float32")(x)), [_floats(rng, (BATCH, 8, 5))]


def mixed_bfloat16_bigru(rng):
    # Keras mixed precision API docs: mixed_bfloat16 (the TPU policy), a bidirectional GRU
    keras, layers = _layers()

    def build():
        inputs = keras.Input((10, 4))
        x = layers.Bidirectional(layers.GRU(6))(inputs)
        return keras.Model(inputs, layers.Dense(2, dtype="float32")(x))

    return _under_policy("mixed_bfloat16", build), [_floats(rng, (BATCH, 10, 4))]


def forda_lstm_dropout(rng):
    # keras-io timeseries classification on FordA (500 steps of one feature), the recurrent
    # variant: two LSTMs with dropout and recurrent dropout, over 300 steps here (600 cell
    # steps: past the unrolled form's 500, so the WHILE form)
    keras, layers = _layers()
    inputs = keras.Input((300, 1))
    x = layers.LSTM(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.2)(inputs)
    x = layers.LSTM(8, dropout=0.2)(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x)), [
        _floats(rng, (BATCH, 300, 1))]


def encoder_state_bare_tensor(rng):
    # keras-io guides/working_with_rnns.py "RNN state reuse": the encoder's state starts the
    # decoder; a GRU's one state handed over bare (initial_state=state)
    keras, layers = _layers()
    encoder_inputs = keras.Input((None,), dtype="int32", name="encoder")
    decoder_inputs = keras.Input((None,), dtype="int32", name="decoder")
    _, state = layers.GRU(8, return_state=True)(layers.Embedding(30, 6)(encoder_inputs))
    x = layers.GRU(8, return_sequences=True)(layers.Embedding(30, 6)(decoder_inputs),
                                             initial_state=state)
    return keras.Model([encoder_inputs, decoder_inputs], layers.Dense(30)(x)), [
        rng.integers(0, 30, (BATCH, 7)).astype(np.int32),
        rng.integers(0, 30, (BATCH, 5)).astype(np.int32)]


def bidirectional_merge_none(rng):
    # keras.layers.Bidirectional docstring: merge_mode=None returns both directions
    keras, layers = _layers()
    inputs = keras.Input((7, 4))
    forward, backward = layers.Bidirectional(layers.LSTM(5, return_sequences=True),
                                             merge_mode=None)(inputs)
    return keras.Model(inputs, [layers.Dense(2)(forward), backward]), [
        _floats(rng, (BATCH, 7, 4))]


def native_recurrent_activations(rng):
    # the activation options Keras's recurrent layers take (keras.layers.LSTM/GRU/SimpleRNN
    # docstrings): each one the ONNX operators have, in each cell slot
    keras, layers = _layers()
    inputs = keras.Input((6, 3))
    x = layers.SimpleRNN(5, activation="softsign", return_sequences=True)(inputs)
    x = layers.GRU(5, activation="elu", recurrent_activation="hard_sigmoid",
                   return_sequences=True)(x)
    x = layers.LSTM(5, activation="softplus", recurrent_activation="sigmoid",
                    return_sequences=True)(x)
    x = layers.SimpleRNN(4, activation="relu", return_sequences=True)(x)
    x = layers.GRU(4, activation="linear", recurrent_activation="softsign")(x)
    return keras.Model(inputs, x), [_floats(rng, (BATCH, 6, 3))]


def converter_recurrent_activations(rng):
    # activations Keras takes that no ONNX recurrent operator has (swish, selu): the
    # converters' own loop for those layers, the LSTM after them native
    keras, layers = _layers()
    inputs = keras.Input((6, 3))
    x = layers.GRU(5, activation="swish", return_sequences=True)(inputs)
    x = layers.SimpleRNN(5, activation="selu", return_sequences=True)(x)
    return keras.Model(inputs, layers.LSTM(4)(x)), [_floats(rng, (BATCH, 6, 3))]


def hierarchical_lstm_dropout(rng):
    # Hierarchical attention networks for document classification (Yang et al. 2016), as in
    # richliao/textClassifier's HATT: a word encoder with dropout in TimeDistributed over the
    # sentences, then a sentence encoder
    keras, layers = _layers()
    words = keras.Input((5,), dtype="int32")
    word_encoder = keras.Model(words, layers.LSTM(6, dropout=0.2, recurrent_dropout=0.2)(
        layers.Embedding(40, 8)(words)))
    document = keras.Input((4, 5), dtype="int32")
    sentences = layers.TimeDistributed(word_encoder)(document)
    x = layers.Bidirectional(layers.GRU(5, dropout=0.1))(sentences)
    return keras.Model(document, layers.Dense(3, activation="softmax")(x)), [
        rng.integers(1, 40, (BATCH, 4, 5)).astype(np.int32)]


def imdb_cnn_lstm(rng):
    # keras examples imdb_cnn_lstm.py: Embedding, Dropout, Conv1D, MaxPooling1D, LSTM, Dense
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((40,), dtype="int32"), layers.Embedding(100, 8), layers.Dropout(0.25),
        layers.Conv1D(8, 5, padding="valid", activation="relu", strides=1),
        layers.MaxPooling1D(pool_size=4), layers.LSTM(7), layers.Dense(1, activation="sigmoid")])
    return model, [rng.integers(1, 100, (BATCH, 40)).astype(np.int32)]


def recurrent_layer_options(rng):
    # keras.layers.GRU / LSTM docstring options: unroll=True, use_bias=False,
    # unit_forget_bias=False, reset_after=False
    keras, layers = _layers()
    inputs = keras.Input((6, 4))
    x = layers.GRU(5, unroll=True, reset_after=False, return_sequences=True)(inputs)
    x = layers.LSTM(5, use_bias=False, return_sequences=True)(x)
    x = layers.LSTM(4, unit_forget_bias=False, bias_initializer="uniform")(x)
    return keras.Model(inputs, x), [_floats(rng, (BATCH, 6, 4))]


def bidirectional_with_backward_layer(rng):
    # keras.layers.Bidirectional docstring: a forward LSTM with a GRU given as backward_layer
    # (go_backwards=True), over masked ids
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(30, 6, mask_zero=True),
        layers.Bidirectional(layers.LSTM(5, return_sequences=True),
                             backward_layer=layers.GRU(5, return_sequences=True,
                                                       go_backwards=True)),
        layers.GlobalAveragePooling1D(), layers.Dense(2)])
    return model, [_ids(rng, (BATCH, 8), 30, "middle")]


def go_backwards_post_padded(rng):
    # keras.layers.SimpleRNN/LSTM go_backwards (the Keras RNN guide's reversed-input trick)
    # over post-padded ids
    keras, layers = _layers()
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(30, 6, mask_zero=True),
        layers.SimpleRNN(5, go_backwards=True, return_sequences=True),
        layers.LSTM(4, go_backwards=True), layers.Dense(2)])
    return model, [_ids(rng, (BATCH, 8), 30, "post")]


def gelu_gru(rng):
    # a GRU with activation="gelu" (exact): TensorFlow computes it with Erfc, which neither
    # tf2onnx nor Keras's own ONNX export converts; the TFLite converter's WHILE form does
    keras, layers = _layers()
    inputs = keras.Input((6, 3))
    return keras.Model(inputs, layers.GRU(4, activation="gelu")(inputs)), [
        _floats(rng, (BATCH, 6, 3))]


def string_lookup_tokens(rng):
    # keras-io guides/preprocessing_layers.py (StringLookup on tokens, inside the model) feeding
    # an Embedding and an LSTM, as the TensorFlow text tutorials' models do
    keras, layers = _layers()
    vocabulary = ["a", "cat", "dog", "ran", "sat", "the", "über"]
    words = keras.Input((6,), dtype="string")
    ids = layers.StringLookup(vocabulary=vocabulary, mask_token="")(words)
    x = layers.Embedding(len(vocabulary) + 2, 6, mask_zero=True)(ids)
    model = keras.Model(words, layers.Dense(2)(layers.LSTM(5)(x)))
    pool = np.array(vocabulary + ["", "zebra"], dtype=object)  # "" pads; zebra is unseen
    return model, [pool[rng.integers(0, len(pool), (BATCH, 6))].astype(str)]


def text_vectorization_end_to_end(rng):
    # keras-io examples/nlp/text_classification_from_scratch.py: the end-to-end model taking
    # raw sentences (TextVectorization inside), with a GRU over its ids
    keras, layers = _layers()
    vectorize = layers.TextVectorization(max_tokens=30, output_sequence_length=8)
    vectorize.adapt(["The cat sat on the mat.", "A dog ran far, far away!", "the dog sat"])
    text = keras.Input((1,), dtype="string")
    x = layers.Embedding(30, 6, mask_zero=True)(vectorize(text))
    model = keras.Model(text, layers.Dense(1, activation="sigmoid")(layers.GRU(5)(x)))
    return model, [np.array([["the cat ran away"], ["A DOG sat."]])]


CASES = [bidirectional_lstm_imdb, addition_rnn, lstm_seq2seq, weather_forecasting,
         forda_conv_gru, ctc_asr, handwriting_recognition, video_classification, conv_lstm,
         rnn_guide_lstm, rnn_guide_gru_simple_rnn, rnn_guide_encoder_decoder,
         rnn_guide_cell_layer, rnn_guide_bidirectional, stacked_rnn_cells, custom_minimal_cell,
         masking_guide_embedding, masking_guide_masking_layer, masking_guide_explicit_mask,
         tf2onnx_gru_variants, tf2onnx_simple_rnn_relu, tf2onnx_bidirectional_merges,
         keras_lstm_options, attention_over_lstm, multi_head_attention_on_bilstm,
         bilstm_tagger, cnn_lstm_video, cnn_lstm_timeseries, lstm_autoencoder,
         stacked_gru_normalized, multi_output_trunk, ticket_classifier, normalization_front,
         nested_encoder, gru_states_as_outputs, causal_conv_bigru,
         text_generation_subclassed, siamese_manhattan_lstm, mixed_float16_lstm, float16_gru,
         mixed_bfloat16_bigru, forda_lstm_dropout, encoder_state_bare_tensor,
         bidirectional_merge_none, native_recurrent_activations, converter_recurrent_activations,
         hierarchical_lstm_dropout, imdb_cnn_lstm, recurrent_layer_options,
         bidirectional_with_backward_layer, go_backwards_post_padded, gelu_gru,
         string_lookup_tokens, text_vectorization_end_to_end]
# no native operator exists for these: the converters' own loops
CONVERTER_LOOPS = {"conv_lstm", "custom_minimal_cell", "converter_recurrent_activations",
                   "gelu_gru"}
# refused by the project in a format, with the refusal's words: the anchor must fail there too
REFUSED = {("gelu_gru", "onnx"): "Erfc",
           ("string_lookup_tokens", "onnx"): ".onnx files take numbers",
           ("text_vectorization_end_to_end", "onnx"): ".onnx files take numbers",
           ("text_vectorization_end_to_end", "tflite"): "StringSplitV2 ops TFLite has no"}


@pytest.mark.parametrize("build", CASES, ids=[case.__name__ for case in CASES])
def test_corpus_model_exports_to_both_formats_and_matches_keras(tmp_path, build):
    """Each format: the project's file matches Keras in every runtime it claims and passes
    `verify`; or the project refuses (the cases in REFUSED) and then the anchor, Keras's own
    export to that format, does not write a correct file either. Where the project's file is
    correct the anchor cannot do better, so the anchors run where the project refuses
    (`benchmarks/anchors.py` runs them on every case and prints the table)."""
    import keras
    import onnx

    keras.utils.set_random_seed(11)
    model, arrays = build(np.random.default_rng(11))
    view = exportable(model)  # a subclassed model's functional view, as the exporters take it
    specs = input_specs(view)
    names = [name for name, _, _ in specs]
    feeds = dict(zip(names, arrays))
    lengths = {name: array.shape[1] for (name, shape, _), array in zip(specs, arrays)
               if len(shape) > 1 and shape[1] is None}  # each free time axis, by input name
    expected = keras_outputs(view, feeds)
    # a model computing in half precision is compared within its precision's bound
    half = HALF_PRECISION_TOLERANCE.get(half_precision(view), 0.0)
    exports = {"tflite": lambda: export_tflite(model, tmp_path / "m.tflite", batch_size=BATCH,
                                               seq_len=lengths or None),
               "onnx": lambda: export_onnx(model, tmp_path / "m.onnx")}
    paths = {}
    for fmt, tolerance in (("tflite", TFLITE_TOLERANCE), ("onnx", ONNX_TOLERANCE)):
        refusal = REFUSED.get((build.__name__, fmt))
        if refusal:
            with pytest.raises(ValueError, match=refusal):
                exports[fmt]()
            correct, what = anchor_correct(view, fmt, tmp_path / f"anchor.{fmt}", feeds,
                                           list(expected.values()), max(tolerance, half), specs)
            assert not correct, f"the project refuses {fmt} where the anchor is correct: {what}"
            continue
        path = paths[fmt] = exports[fmt]()
        for runtime in runtimes_for(path):
            actual = load(path, runtime=runtime).run_named(feeds)  # independent of verify
            for name, value in expected.items():
                assert_outputs_close(f"{build.__name__} {runtime} {name}", actual[name], value,
                                     max(tolerance, half))
        report = verify(model, path, feeds)
        assert report.passed, str(report)
    if "onnx" not in paths:
        return
    onnx_path = paths["onnx"]
    op_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    forms = json.loads(load(onnx_path).metadata[FORMS_METADATA])
    if build.__name__ in CONVERTER_LOOPS:
        assert "converter loop" in forms.values() or "Loop" in forms.values(), forms
        if "Loop" in op_types:  # tf2onnx's Loop form is proven in ONNX Runtime alone
            assert runtimes_for(onnx_path) == ("onnxruntime",), runtimes_for(onnx_path)
    else:
        assert "Loop" not in op_types, op_types
        # proven above in every runtime the file claims; those it leaves out lack one of its
        # activations (tests/test_verify.py checks each left-out runtime really fails)
        assert runtimes_for(onnx_path)[0] == "onnxruntime"
        # a Scan only as a masked LSTM's cell-state recurrence (c = f * c + i * g)
        for node in onnx.load(onnx_path).graph.node:
            if node.op_type == "Scan":
                body = next(a.g for a in node.attribute if a.name == "body")
                assert {n.op_type for n in body.node} <= {"Mul", "Add", "Identity"}, node.name
        assert set(forms.values()) == {"native operator"}, forms
        assert any(op in op_types for op in ("RNN", "LSTM", "GRU")), op_types
