"""One object per recurrent cell kind: every fact about SimpleRNN, LSTM and GRU in one table.

Each `Cell` holds the Keras classes it stands for, its gates in Keras's kernel order, the states
it carries, the lecture's equations for one step in NumPy (the teaching aid and the parity
oracle, `keras_rnn.reference`), the same step as TensorFlow ops (what the unrolled TFLite file
is built from, `export.tflite`), and the native ONNX operator with its gate order and
activation slots (`export.onnx`). Every consumer dispatches through `cell(name)` or
`cell_of(keras_cell)`; an unknown kind raises there, once, naming it: no consumer falls
through to another cell's equations.

Adding a cell kind is one `Cell` in `CELLS` (and its equations below).

Keras stores weights transposed (inputs on the left: `x_t @ W`); the `(batch, k * units)`
projections are split in gate order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Cell:
    name: str  # the config string (`build_model(cell=...)`) and a description's `.cell`
    keras_layer: str  # the Keras layer class (keras.layers.<name>)
    keras_cell: str  # the Keras cell class the table recognizes (keras.layers.<name>)
    gates: tuple  # the kernel's column blocks, in Keras's order
    states: tuple  # the states carried from step to step, in Keras's order
    # numpy_step(layer, x_t, states, act, gate) -> (output, new states), float64
    numpy_step: Callable
    # tf_step(layer, projected x_t, states, weights, act, gate) -> new states
    tf_step: Callable
    # tf_weights(layer) -> {name: recurrent weight constant}, made once per layer
    tf_weights: Callable
    onnx_operator: str  # the native ONNX operator
    onnx_gates: tuple  # the operator's gate order (its W, R and B rows)
    # the Keras activation attribute behind each of the operator's activation slots
    onnx_activations: tuple
    # onnx_attributes(layer) -> the operator attributes this kind adds (GRU's reset variant)
    onnx_attributes: Callable = lambda layer: {}

    @property
    def uses_recurrent_activation(self) -> bool:
        return "recurrent_activation" in self.onnx_activations

    def keras_to_onnx_gates(self, matrix: np.ndarray, units: int) -> np.ndarray:
        """`matrix`'s last axis (gate blocks of `units`) from Keras's order to the operator's."""
        blocks = [matrix[..., k * units:(k + 1) * units]
                  for k in (self.gates.index(gate) for gate in self.onnx_gates)]
        return np.concatenate(blocks, axis=-1)

    def state_count(self) -> int:
        return len(self.states)


# -- the lecture's equations, one step -----------------------------------------------------------

def _split(values, count: int) -> list:
    units = values.shape[-1] // count
    return [values[..., k * units:(k + 1) * units] for k in range(count)]


def _simple_rnn_numpy(layer, x_t, states, act, gate):
    """h_t = act(x_t W + h_{t-1} U + b)"""
    (h,) = states
    h = act(x_t @ layer.kernel + h @ layer.recurrent_kernel + layer.bias)
    return h, [h]


def _lstm_numpy(layer, x_t, states, act, gate):
    """i, f, g, o = gate, gate, act, gate of (x_t W + h_{t-1} U + b);
    c_t = f * c_{t-1} + i * g;  h_t = o * act(c_t)"""
    h, c = states
    i, f, g, o = _split(x_t @ layer.kernel + h @ layer.recurrent_kernel + layer.bias, 4)
    c = gate(f) * c + gate(i) * act(g)
    h = gate(o) * act(c)
    return h, [h, c]


def _gru_numpy(layer, x_t, states, act, gate):
    """z = gate(x_t W_z + h U_z + b_z), r = gate(x_t W_r + h U_r + b_r);
    reset_after (Keras's default): n = act(x_t W_n + b_n + r * (h U_n + b'_n));
    otherwise (the original paper): n = act(x_t W_n + (r * h) U_n + b_n);
    h_t = z * h + (1 - z) * n"""
    (h,) = states
    kernel, recurrent = layer.kernel, layer.recurrent_kernel
    if layer.reset_after:
        x_z, x_r, x_n = _split(x_t @ kernel + layer.bias[0], 3)
        h_z, h_r, h_n = _split(h @ recurrent + layer.bias[1], 3)
        z, r = gate(x_z + h_z), gate(x_r + h_r)
        candidate = act(x_n + r * h_n)
    else:
        x_z, x_r, x_n = _split(x_t @ kernel + layer.bias, 3)
        u_z, u_r, u_n = _split(recurrent, 3)
        z, r = gate(x_z + h @ u_z), gate(x_r + h @ u_r)
        candidate = act(x_n + (r * h) @ u_n)
    h = z * h + (1.0 - z) * candidate
    return h, [h]


# -- the same step as TensorFlow ops (from the projected input x_t W + input bias) -------------

def _plain_tf_weights(layer) -> dict:
    import tensorflow as tf

    return {"kernel": tf.constant(layer.recurrent_kernel)}


def _simple_rnn_tf(layer, x_t, states, weights, act, gate):
    import tensorflow as tf

    (h,) = states
    return [act(x_t + tf.matmul(h, weights["kernel"]))]


def _lstm_tf(layer, x_t, states, weights, act, gate):
    import tensorflow as tf

    h, c = states
    i, f, g, o = tf.split(x_t + tf.matmul(h, weights["kernel"]), 4, axis=1)  # (batch, units) each
    new_c = gate(f) * c + gate(i) * act(g)
    return [gate(o) * act(new_c), new_c]


def _gru_tf_weights(layer) -> dict:
    import tensorflow as tf

    units = layer.units
    if not layer.reset_after:
        # the candidate's recurrent matmul runs on r * h, after the gates: two matrices
        return {"gates": tf.constant(layer.recurrent_kernel[:, : 2 * units]),
                "candidate": tf.constant(layer.recurrent_kernel[:, 2 * units:])}
    # the recurrent bias's update and reset parts ride on the input projection
    # (export.tflite.forms.input_bias); the candidate's stays beside the reset gate
    return {"kernel": tf.constant(layer.recurrent_kernel),
            "bias": tf.constant(layer.bias[1][2 * units:])}


def _gru_tf(layer, x_t, states, weights, act, gate):
    import tensorflow as tf

    (h,) = states
    x_z, x_r, x_n = tf.split(x_t, 3, axis=1)
    if layer.reset_after:
        h_z, h_r, h_n = tf.split(tf.matmul(h, weights["kernel"]), 3, axis=1)
        z, r = gate(x_z + h_z), gate(x_r + h_r)
        candidate = act(x_n + r * (h_n + weights["bias"]))
    else:
        h_z, h_r = tf.split(tf.matmul(h, weights["gates"]), 2, axis=1)
        z, r = gate(x_z + h_z), gate(x_r + h_r)
        candidate = act(x_n + tf.matmul(r * h, weights["candidate"]))
    return [z * h + (1.0 - z) * candidate]


SIMPLE_RNN = Cell(
    name="simple_rnn", keras_layer="SimpleRNN", keras_cell="SimpleRNNCell",
    gates=("h",), states=("h",), numpy_step=_simple_rnn_numpy, tf_step=_simple_rnn_tf,
    tf_weights=_plain_tf_weights, onnx_operator="RNN", onnx_gates=("h",),
    onnx_activations=("activation",),
)
LSTM = Cell(
    name="lstm", keras_layer="LSTM", keras_cell="LSTMCell",
    gates=("i", "f", "c", "o"), states=("h", "c"), numpy_step=_lstm_numpy, tf_step=_lstm_tf,
    tf_weights=_plain_tf_weights, onnx_operator="LSTM", onnx_gates=("i", "o", "f", "c"),
    # f (the gates), g (the cell input), h (the output): ONNX's LSTM activation slots
    onnx_activations=("recurrent_activation", "activation", "activation"),
)
GRU = Cell(
    name="gru", keras_layer="GRU", keras_cell="GRUCell",
    gates=("z", "r", "h"), states=("h",), numpy_step=_gru_numpy, tf_step=_gru_tf,
    tf_weights=_gru_tf_weights, onnx_operator="GRU", onnx_gates=("z", "r", "h"),
    onnx_activations=("recurrent_activation", "activation"),
    onnx_attributes=lambda layer: {"linear_before_reset": int(layer.reset_after)},
)
CELLS = {cell.name: cell for cell in (SIMPLE_RNN, LSTM, GRU)}


def cell(name: str) -> Cell:
    """The cell kind `name` ("simple_rnn", "lstm", "gru").

    Raises:
        ValueError: an unknown kind, naming it and the known ones.
    """
    try:
        return CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown cell {name!r}: expected one of "
                         f"{', '.join(map(repr, CELLS))}.") from None


def cell_of(keras_cell) -> Cell | None:
    """The kind of a Keras cell object whose class is exactly one in the table (a subclass may
    compute anything, so it is not taken for its base); None otherwise."""
    import keras

    kind = type(keras_cell)
    return next((entry for entry in CELLS.values()
                 if kind is getattr(keras.layers, entry.keras_cell)), None)


def keras_layer_class(name: str):
    """`keras.layers.SimpleRNN` / `LSTM` / `GRU` for a cell name."""
    import keras

    return getattr(keras.layers, cell(name).keras_layer)
