"""A trained Keras RNN model read into plain layer descriptions with NumPy weights.

The NumPy reference (`keras_rnn.reference`) and the exporters (`export.model`,
`export.tflite`, `export.onnx`) work from these descriptions rather than from Keras objects:
they see exactly the weights and options that decide what the model computes, and anything
this module does not understand is refused here, once, with the name of the layer. It lives in
the lecture package so that no `keras_rnn` module imports `export` (the exporters import it).

`describe_layer` describes one layer (the exporters describe each built-in recurrent layer of
any graph). `read_model` reads a single chain of `InputLayer`, `Embedding` (with `mask_zero`),
`Masking`, `SimpleRNN`, `LSTM`, `GRU` (both `reset_after` variants), `Bidirectional` of those,
`Dropout` (identity at inference), `Dense`, `TimeDistributed(Dense)`, `Activation` and
`Softmax`: what the reference's `run_model` and the translators' hand-written decoder take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_rnn.cells import cell_of
from keras_rnn.models import CELLS  # noqa: F401  (defined by the lecture models; read here)

# the recurrent activations written natively (every format has them); a recurrent layer with
# another one gets the converter's own form in the exporters
RNN_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "softsign", "softplus",
                   "elu")
HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid", "tanh", "relu")


class UnsupportedModelError(ValueError):
    """The model holds a layer or option that cannot be exported or referenced exactly."""


@dataclass(frozen=True)
class Embedding:
    name: str
    table: np.ndarray  # (vocabulary size, embedding dim)
    mask_zero: bool  # id 0 is padding: the recurrent layers skip those steps


@dataclass(frozen=True)
class Masking:
    name: str
    mask_value: float  # a step whose features all equal this is skipped


@dataclass(frozen=True)
class Recurrent:
    name: str
    cell: str  # one of CELLS
    units: int
    kernel: np.ndarray  # (input dim, gates * units), gates in Keras order
    recurrent_kernel: np.ndarray  # (units, gates * units)
    bias: np.ndarray  # (gates * units,); GRU reset_after: (2, 3 * units) = input, recurrent
    activation: str
    recurrent_activation: str  # unused by simple_rnn
    reset_after: bool  # GRU only: reset gate applied after the recurrent matmul
    return_sequences: bool
    go_backwards: bool
    zero_output_for_mask: bool  # masked steps output zeros instead of the previous output
    stateful: bool = False  # the final state is kept for the next call (Keras stateful=True)

    @property
    def input_dim(self) -> int:
        return self.kernel.shape[0]


@dataclass(frozen=True)
class Stacked:
    """`keras.layers.RNN(keras.layers.StackedRNNCells([...]))` over built-in cells: at every
    step each cell feeds the next. Written as the cells run one after another over the whole
    sequence (every cell but the last returning all its steps), which computes the same: a
    masked step keeps every cell's state, and the last cell's output there is its previous
    one either way."""

    name: str
    layers: tuple  # a `Recurrent` per cell, in order
    return_sequences: bool

    @property
    def units(self) -> int:
        return self.layers[-1].units


@dataclass(frozen=True)
class Bidirectional:
    name: str
    forward: Recurrent
    backward: Recurrent  # go_backwards=True; its outputs are flipped back to input order
    merge_mode: str | None  # "concat", "sum", "ave", "mul"; None: both directions returned
    return_sequences: bool

    @property
    def units(self) -> int:
        """The units of each output (one output, or each direction's with merge_mode=None)."""
        return self.forward.units * (2 if self.merge_mode == "concat" else 1)


@dataclass(frozen=True)
class Dense:
    name: str
    kernel: np.ndarray  # (input dim, units)
    bias: np.ndarray  # (units,)
    activation: str


@dataclass(frozen=True)
class Activation:
    name: str
    activation: str


@dataclass(frozen=True)
class ModelStructure:
    """The model's input and its layers in order."""

    input_shape: tuple  # (batch, timesteps, features) or (batch, timesteps) for ids; None = any
    input_dtype: str  # "float32" for vectors, "int32"/"int64" for ids
    layers: tuple

    @property
    def takes_ids(self) -> bool:
        return len(self.input_shape) == 2

    @property
    def seq_len(self) -> int | None:
        return self.input_shape[1]

    @property
    def masked(self) -> bool:
        return any(
            isinstance(layer, Masking) or (isinstance(layer, Embedding) and layer.mask_zero)
            for layer in self.layers
        )

    @property
    def recurrent_layers(self) -> list:
        return [layer for layer in self.layers if isinstance(layer, (Recurrent, Bidirectional))]


def model_inputs_outputs(model) -> tuple[list, list]:
    """A built Keras model's input and output tensors.

    Raises:
        TypeError: not a `keras.Model`.
        ValueError: a model that was never built (its inputs are unknown).
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"Model {model.name!r} has no defined input: start it with keras.Input(shape=...) "
            "or call it on data once before exporting."
        )
    return list(inputs), list(outputs)


def read_model(model) -> ModelStructure:
    """Reads a built Keras model into a `ModelStructure`.

    Raises:
        UnsupportedModelError: for an unsupported layer or option, naming the layer.
        ValueError: for a model that was never built (its input shape is unknown).
    """
    inputs, outputs = model_inputs_outputs(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"Model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "only single-input, single-output chains of layers are supported."
        )
    input_shape = tuple(inputs[0].shape)
    input_dtype = str(inputs[0].dtype)
    if len(input_shape) not in (2, 3):
        raise UnsupportedModelError(
            f"Model input has shape {input_shape}; expected (batch, timesteps, features) or "
            "(batch, timesteps) of integer ids."
        )
    _check_chain(model)
    layers = []
    for layer in model.layers:
        if getattr(layer, "return_state", False):
            raise UnsupportedModelError(
                f"Layer {layer.name!r} has return_state=True; in a chain of layers only "
                "layers that return just their outputs are supported."
            )
        described = describe_layer(layer)
        if described is not None:
            layers.append(described)
    if not any(isinstance(layer, (Recurrent, Bidirectional)) for layer in layers):
        raise UnsupportedModelError(
            f"Model {model.name!r} has no SimpleRNN, LSTM or GRU layer."
        )
    return ModelStructure(input_shape, input_dtype, tuple(layers))


def _check_chain(model) -> None:
    """Refuses functional graphs that branch or merge: each layer must feed the next."""
    import keras

    if isinstance(model, keras.Sequential):
        return  # a chain by construction
    model_nodes = getattr(model, "_nodes", None)
    previous = model.inputs[0]
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        # Keras keys the model's own nodes as "<id(layer)>_ib-<index>"; other calls of the
        # layer (outside this model) are not part of its graph.
        nodes = [node for index, node in enumerate(layer._inbound_nodes)
                 if model_nodes is None or f"{id(layer)}_ib-{index}" in model_nodes]
        if len(nodes) != 1:
            raise UnsupportedModelError(
                f"Layer {layer.name!r} is called {len(nodes)} times; only a chain of layers "
                "each used once is supported."
            )
        arguments = nodes[0].arguments
        # Keras passes the propagated padding mask as `mask=`; anything else (an
        # `initial_state=`, a second input) makes the graph more than a chain.
        extra = [
            key for key, value in arguments.kwargs.items()
            if key not in ("mask", "training") and value is not None
        ]
        if len(arguments.args) != 1 or arguments.args[0] is not previous or extra:
            raise UnsupportedModelError(
                f"Layer {layer.name!r} does not take the previous layer's output as its only "
                "input; only a single chain of layers is supported."
            )
        previous = nodes[0].output_tensors[0]
    if previous is not model.outputs[0]:
        raise UnsupportedModelError("The model's output is not the last layer's output.")


def _activation_name(function) -> str:
    return getattr(function, "__name__", str(function))


def describe_layer(layer, *, merge_modes=("concat", "sum", "ave", "mul")):
    """One Keras layer's description, or None for layers that do nothing at inference.
    `merge_modes`: the Bidirectional merge modes taken (the exporters also take None)."""
    import keras

    kind = type(layer).__name__
    if kind == "InputLayer" or isinstance(layer, keras.layers.Dropout):
        return None
    if isinstance(layer, keras.layers.Embedding):
        return Embedding(
            layer.name, np.asarray(layer.embeddings.numpy(), np.float32), bool(layer.mask_zero)
        )
    if isinstance(layer, keras.layers.Masking):
        return Masking(layer.name, float(layer.mask_value))
    if is_builtin_recurrent(layer):
        return _describe_recurrent(layer)
    if isinstance(layer, keras.layers.Bidirectional):
        forward = _describe_recurrent(layer.forward_layer)
        backward = _describe_recurrent(layer.backward_layer)
        if layer.merge_mode not in merge_modes:
            raise UnsupportedModelError(
                f"Bidirectional layer {layer.name!r} has merge_mode={layer.merge_mode!r}; "
                f"supported: {', '.join(map(repr, merge_modes))}."
            )
        if forward.go_backwards or not backward.go_backwards:
            raise UnsupportedModelError(
                f"Bidirectional layer {layer.name!r} wraps a go_backwards forward layer."
            )
        return Bidirectional(
            layer.name, forward, backward, layer.merge_mode, bool(layer.return_sequences)
        )
    if isinstance(layer, keras.layers.TimeDistributed):
        inner = layer.layer
        if not isinstance(inner, keras.layers.Dense):
            raise UnsupportedModelError(
                f"Unsupported layer {layer.name!r}: TimeDistributed({type(inner).__name__}); "
                "only TimeDistributed(Dense) is supported."
            )
        return _describe_dense(inner, name=layer.name)
    if isinstance(layer, keras.layers.Dense):
        return _describe_dense(layer, name=layer.name)
    if isinstance(layer, keras.layers.Softmax):
        if layer.axis not in (-1, [-1]):
            raise UnsupportedModelError(
                f"Softmax layer {layer.name!r} uses axis={layer.axis}; only -1 is supported."
            )
        return Activation(layer.name, "softmax")
    if isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        _check_activation(layer.name, name, HEAD_ACTIVATIONS)
        return Activation(layer.name, name)
    raise UnsupportedModelError(
        f"Unsupported layer {layer.name!r} of type {kind}. Supported: Embedding, Masking, "
        "SimpleRNN, LSTM, GRU, Bidirectional, Dropout, Dense, TimeDistributed(Dense), "
        "Activation, Softmax."
    )


def _check_activation(layer_name: str, name: str, allowed) -> None:
    if name not in allowed:
        raise UnsupportedModelError(
            f"Layer {layer_name!r} uses activation {name!r}; supported here: {list(allowed)}."
        )


def _describe_dense(layer, *, name: str) -> Dense:
    activation = _activation_name(layer.activation)
    _check_activation(name, activation, HEAD_ACTIVATIONS)
    kernel = np.asarray(layer.kernel.numpy(), np.float32)
    if layer.bias is not None:
        bias = np.asarray(layer.bias.numpy(), np.float32)
    else:
        bias = np.zeros(kernel.shape[1], np.float32)
    return Dense(name, kernel, bias, activation)


def _cell_kind(layer) -> str | None:
    """"simple_rnn", "lstm" or "gru" for a recurrent layer over one built-in cell
    (`SimpleRNN`, `LSTM`, `GRU`, or `keras.layers.RNN` over their cells), else None."""
    import keras

    if not isinstance(layer, keras.layers.RNN):
        return None
    kind = cell_of(layer.cell)
    return kind.name if kind else None


def is_builtin_recurrent(layer) -> bool:
    """True for the recurrent layers this project writes in native form."""
    return _cell_kind(layer) is not None


def is_stacked_builtin(layer) -> bool:
    """True for `keras.layers.RNN(StackedRNNCells(cells))` over built-in cells that runs
    forwards, holds no state between calls and returns no states (`describe_stacked`)."""
    import keras

    cell = getattr(layer, "cell", None)
    return (isinstance(layer, keras.layers.RNN)
            and isinstance(cell, keras.layers.StackedRNNCells)
            and all(cell_of(inner) is not None for inner in cell.cells)
            and not (layer.go_backwards or layer.stateful or layer.return_state))


def describe_stacked(layer) -> Stacked:
    cells = layer.cell.cells
    layers = tuple(
        _describe_cell(layer, cell, name=f"{layer.name}/cell_{index}",
                       return_sequences=index < len(cells) - 1 or bool(layer.return_sequences))
        for index, cell in enumerate(cells))
    return Stacked(layer.name, layers, bool(layer.return_sequences))


def _describe_recurrent(layer) -> Recurrent:
    cell_kind = _cell_kind(layer)
    if cell_kind is None:
        raise UnsupportedModelError(
            f"Unsupported recurrent layer {layer.name!r} of type {type(layer).__name__}; "
            "supported: SimpleRNN, LSTM, GRU and keras.layers.RNN over their cells."
        )
    return _describe_cell(layer, layer.cell, name=layer.name,
                          return_sequences=bool(layer.return_sequences))


def _describe_cell(layer, cell, *, name: str, return_sequences: bool) -> Recurrent:
    """One built-in cell of the recurrent `layer` (its own, or one of a stack)."""
    kind = cell_of(cell)
    activation = _activation_name(cell.activation)
    _check_activation(name, activation, RNN_ACTIVATIONS)
    recurrent_activation = _activation_name(getattr(cell, "recurrent_activation", None))
    if kind.uses_recurrent_activation:
        _check_activation(name, recurrent_activation, RNN_ACTIVATIONS)
    gates = len(kind.gates)
    units = int(cell.units)
    kernel = np.asarray(cell.kernel.numpy(), np.float32)
    recurrent_kernel = np.asarray(cell.recurrent_kernel.numpy(), np.float32)
    reset_after = bool(getattr(cell, "reset_after", False))
    if cell.bias is not None:
        bias = np.asarray(cell.bias.numpy(), np.float32)
    elif reset_after:  # GRU: an input and a recurrent bias
        bias = np.zeros((2, gates * units), np.float32)
    else:
        bias = np.zeros(gates * units, np.float32)
    return Recurrent(
        name=name,
        cell=kind.name,
        units=units,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        activation=activation,
        recurrent_activation=recurrent_activation,
        reset_after=reset_after,
        return_sequences=return_sequences,
        go_backwards=bool(layer.go_backwards),
        zero_output_for_mask=bool(layer.zero_output_for_mask),
        stateful=bool(layer.stateful),
    )
