"""The NumPy lecture equations against Keras itself: max abs difference <= 1e-5 in float32."""

import numpy as np
import pytest
from helpers import assert_outputs_close

from keras_rnn import build_model
from keras_rnn.reference import run_layer, run_model

# Both sides compute the same float32-representable weights; NumPy sums in float64, Keras in
# float32. Over 200 tanh-bounded steps the rounding measured here stays below 5e-7.
REFERENCE_TOLERANCE = 1e-5
CELLS = ("simple_rnn", "lstm", "gru")


def _layer(cell, units, **options):
    import keras

    if cell == "gru_reset_before":
        return keras.layers.GRU(units, reset_after=False, **options)
    return {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
            "gru": keras.layers.GRU}[cell](units, **options)


@pytest.mark.parametrize("cell", CELLS + ("gru_reset_before",))
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("length", [1, 7, pytest.param(200, marks=pytest.mark.slow)])
def test_layer_outputs_and_final_states_match_keras(cell, batch, length):
    import keras

    keras.utils.set_random_seed(1)
    layer = _layer(cell, 6, return_sequences=True, return_state=True)
    x = np.random.default_rng(length).normal(size=(batch, length, 3)).astype(np.float32)
    keras_outputs, *keras_states = layer(x)
    outputs, states = run_layer(layer, x)
    assert_outputs_close(f"{cell} outputs", outputs, np.asarray(keras_outputs), REFERENCE_TOLERANCE)
    for index, (mine, theirs) in enumerate(zip(states, keras_states)):
        assert_outputs_close(f"{cell} state {index}", mine, np.asarray(theirs), REFERENCE_TOLERANCE)


@pytest.mark.parametrize("cell", CELLS + ("gru_reset_before",))
def test_masked_layer_matches_keras(cell):
    import keras

    keras.utils.set_random_seed(2)
    layer = _layer(cell, 5, return_sequences=True, return_state=True)
    x = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
    mask = np.ones((3, 9), bool)
    mask[0, 4:] = False  # padding at the end
    mask[1, :2] = False  # padding at the start: Keras skips it too
    keras_outputs, *keras_states = layer(x, mask=mask)
    outputs, states = run_layer(layer, x, mask)
    assert_outputs_close(f"{cell} masked outputs", outputs, np.asarray(keras_outputs),
                         REFERENCE_TOLERANCE)
    assert_outputs_close(f"{cell} masked state", states[0], np.asarray(keras_states[0]),
                         REFERENCE_TOLERANCE)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("options", [
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(bidirectional=True, return_sequences=False, num_layers=2),
    dict(inputs="ids", mask_zero=True, bidirectional=True),
    dict(inputs="embedding", embedding_dim=3, mask_zero=True, return_sequences=False),
    dict(mask_zero=True, num_layers=2),
])
@pytest.mark.parametrize("batch", [1, 3])
def test_whole_models_match_keras(cell, options, batch):
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(**{"cell": cell, "input_size": 6, "hidden_size": 5, "output_size": 4,
                           **options})
    rng = np.random.default_rng(batch)
    if options.get("inputs"):
        x = rng.integers(1, 6, (batch, 11)).astype(np.int32)
    else:
        x = rng.normal(size=(batch, 11, 6)).astype(np.float32)
    if options.get("mask_zero"):
        x[-1, 6:] = 0
    assert_outputs_close(f"{cell} {options}", run_model(model, x), np.asarray(model(x)),
                         REFERENCE_TOLERANCE)


def test_golden_simple_rnn_by_hand():
    """h_t = tanh(x_t W_xh + h_{t-1} W_hh + b) with constant weights, computed by hand."""
    import keras

    layer = keras.layers.SimpleRNN(
        2, return_sequences=True, kernel_initializer=keras.initializers.Constant(0.5),
        recurrent_initializer=keras.initializers.Constant(0.25),
        bias_initializer=keras.initializers.Constant(0.1))
    x = np.array([[[1.0], [0.0], [-1.0]]], np.float32)  # (1, 3, 1)
    keras_outputs = np.asarray(layer(x))
    h1 = np.tanh(0.5 * 1.0 + 0.1)  # = tanh(0.6)
    h2 = np.tanh(0.5 * 0.0 + 0.25 * 2 * h1 + 0.1)  # W_hh sums both units of h1
    h3 = np.tanh(0.5 * -1.0 + 0.25 * 2 * h2 + 0.1)
    expected = np.array([[[h1, h1], [h2, h2], [h3, h3]]], np.float32)
    assert abs(h1 - 0.53704957) < 1e-7  # tanh(0.6), from a table
    assert_outputs_close("keras vs hand", keras_outputs, expected, 1e-6)
    assert_outputs_close("reference vs hand", run_layer(layer, x)[0], expected, 1e-6)


def test_run_layer_refuses_other_layers():
    import keras

    with pytest.raises(ValueError, match="run_layer takes a SimpleRNN, LSTM, GRU"):
        run_layer(keras.layers.Dense(2), np.zeros((1, 2, 2), np.float32))
