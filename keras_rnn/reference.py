"""The lecture's RNN equations in NumPy, fed with a trained Keras layer's weights.

This is the teaching aid ("this is what the layer computes") and the oracle that the export
parity tests compare against. Notation follows the lecture notes; Keras stores the weights
transposed (inputs on the left: `x_t @ W`), and so do these functions.

Vanilla RNN:  h_t = tanh(x_t W_xh + h_{t-1} W_hh + b)            (y_t = h_t W_hy in the Dense head)
LSTM:         i, f, g, o = sigma(.), sigma(.), tanh(.), sigma(.)  of  x_t W + h_{t-1} U + b
              c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
GRU:          z = sigma(x_t W_z + h_{t-1} U_z + b_z),  r = sigma(x_t W_r + h_{t-1} U_r + b_r)
              reset_after=True (Keras default, cuDNN style):
                  n = tanh(x_t W_n + b_n + r * (h_{t-1} U_n + b'_n))
              reset_after=False (the original paper):
                  n = tanh(x_t W_n + (r * h_{t-1}) U_n + b_n)
              h_t = z * h_{t-1} + (1 - z) * n

Masked steps (padding) follow Keras: the state is carried over unchanged, and the output is the
previous step's output (zeros before the first valid step), or zeros when the layer sets
`zero_output_for_mask` (as `Bidirectional` does when it returns sequences).

Everything is computed in float64 and returned as float32.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_rnn.cells import cell
from keras_rnn.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Masking,
    ModelStructure,
    Recurrent,
    describe_layer,
    read_model,
)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """The Keras activation `name` applied to `x`."""
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))  # sigmoid without overflow in exp
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "linear":
        return x
    if name == "hard_sigmoid":
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if name == "softsign":
        return x / (1.0 + np.abs(x))
    if name == "softplus":
        return np.logaddexp(0.0, x)
    if name == "elu":  # Keras's default alpha = 1
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    if name == "softmax":
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    raise ValueError(f"Unknown activation {name!r}.")


def initial_states(layer: Recurrent, batch: int) -> list[np.ndarray]:
    """Zero states: `[h]`, or `[h, c]` for an LSTM, each of shape `(batch, units)`."""
    return [np.zeros((batch, layer.units)) for _ in cell(layer.cell).states]


def step(layer: Recurrent, x_t: np.ndarray, states: list[np.ndarray]):
    """One time step: `x_t` (batch, input dim) and the states -> (output, new states)."""
    in_float64 = dataclasses.replace(layer, kernel=layer.kernel.astype(np.float64),
                                     recurrent_kernel=layer.recurrent_kernel.astype(np.float64),
                                     bias=layer.bias.astype(np.float64))
    act = lambda x: activation(layer.activation, x)  # noqa: E731
    gate = lambda x: activation(layer.recurrent_activation, x)  # noqa: E731
    # the equations of each cell kind live in its entry of keras_rnn.cells
    return cell(layer.cell).numpy_step(in_float64, x_t, states, act, gate)


def run_recurrent(layer: Recurrent, x: np.ndarray, mask: np.ndarray | None = None):
    """Runs a recurrent layer over a whole sequence, as Keras does.

    Args:
        layer: the layer's description (`keras_rnn.structure.read_model` or `describe_layer`).
        x: inputs, shape `(batch, timesteps, input dim)`.
        mask: optional booleans `(batch, timesteps)`; False steps are skipped.

    Returns:
        `(outputs, states)`: outputs `(batch, timesteps, units)` if the layer returns
        sequences (in reversed time order for a `go_backwards` layer, as Keras returns them),
        else `(batch, units)`; the final states, each `(batch, units)`.
    """
    x = np.asarray(x, np.float64)
    batch, timesteps, _ = x.shape
    order = range(timesteps - 1, -1, -1) if layer.go_backwards else range(timesteps)
    states = initial_states(layer, batch)
    output = np.zeros((batch, layer.units))
    outputs = []
    for t in order:
        new_output, new_states = step(layer, x[:, t], states)
        if mask is None:
            output, states = new_output, new_states
        else:
            keep = mask[:, t][:, None]  # (batch, 1)
            output = np.where(keep, new_output, 0.0 if layer.zero_output_for_mask else output)
            states = [np.where(keep, new, old) for new, old in zip(new_states, states)]
        outputs.append(output)
    if layer.return_sequences:
        result = np.stack(outputs, axis=1)
    else:
        result = outputs[-1]
    return result.astype(np.float32), [s.astype(np.float32) for s in states]


def run_bidirectional(layer: Bidirectional, x: np.ndarray, mask: np.ndarray | None = None):
    """Runs both directions and merges them as `keras.layers.Bidirectional` does."""
    forward, forward_states = run_recurrent(layer.forward, x, mask)
    backward, backward_states = run_recurrent(layer.backward, x, mask)
    if layer.return_sequences:
        backward = backward[:, ::-1]
    merged = {
        "concat": lambda: np.concatenate([forward, backward], axis=-1),
        "sum": lambda: forward + backward,
        "ave": lambda: (forward + backward) / 2,
        "mul": lambda: forward * backward,
    }[layer.merge_mode]()
    return merged.astype(np.float32), forward_states + backward_states


def run_structure(structure: ModelStructure, x: np.ndarray) -> np.ndarray:
    """Runs a whole model description on `x` (floats, or integer ids for Embedding input)."""
    mask = None
    values = np.asarray(x)
    for layer in structure.layers:
        if isinstance(layer, Embedding):
            ids = values.astype(np.int64)
            mask = ids != 0 if layer.mask_zero else None
            values = layer.table[ids].astype(np.float64)
        elif isinstance(layer, Masking):
            mask = np.any(values != layer.mask_value, axis=-1)
            values = values * mask[..., None]
        elif isinstance(layer, Recurrent):
            values, _ = run_recurrent(layer, values, mask)
            mask = mask if layer.return_sequences else None
        elif isinstance(layer, Bidirectional):
            values, _ = run_bidirectional(layer, values, mask)
            mask = mask if layer.return_sequences else None
        elif isinstance(layer, Dense):
            values = activation(layer.activation, values @ layer.kernel.astype(np.float64) + layer.bias)
        elif isinstance(layer, Activation):
            values = activation(layer.activation, np.asarray(values, np.float64))
    return np.asarray(values, np.float32)


def run_model(model, x: np.ndarray) -> np.ndarray:
    """Runs a Keras model's layers with the lecture equations: should equal `model(x)`.

    Example:
        >>> from keras_rnn import build_model
        >>> model = build_model(cell="gru", input_size=5, hidden_size=8, output_size=5)
        >>> x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
        >>> run_model(model, x).shape   # (batch, timesteps, classes)
        (2, 3, 5)
        >>> bool(np.abs(run_model(model, x) - np.asarray(model(x))).max() < 1e-5)
        True
    """
    return run_structure(read_model(model), x)


def run_layer(keras_layer, x: np.ndarray, mask: np.ndarray | None = None):
    """Runs one Keras SimpleRNN / LSTM / GRU / Bidirectional layer's weights on `x`.

    Returns:
        `(outputs, final states)`, as `layer(x, mask=mask)` with `return_state=True` gives them.
    """
    import keras

    if isinstance(keras_layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        layer = describe_layer(keras_layer)
        if isinstance(layer, Bidirectional):
            return run_bidirectional(layer, x, mask)
        return run_recurrent(layer, x, mask)
    raise ValueError(
        f"run_layer takes a SimpleRNN, LSTM, GRU or Bidirectional layer; got "
        f"{type(keras_layer).__name__}. Use run_model for a whole model."
    )
