"""`build_model`: the lecture RNNs (SimpleRNN, LSTM, GRU) as Keras 3 Sequential models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from keras_rnn import cells
from keras_rnn.cells import keras_layer_class

CELLS = tuple(cells.CELLS)  # the lecture's cells, named as Keras names its layers (the table's keys)
INPUTS = ("one_hot", "ids", "embedding")


@dataclass(frozen=True)
class RNNConfig:
    """Everything `build_model` needs; every field has a lecture-friendly default."""

    cell: str = "lstm"  # "simple_rnn", "lstm" or "gru"
    input_size: int = 5  # features per step (one-hot size), or the vocabulary size for ids
    hidden_size: int = 5  # units of each recurrent layer
    num_layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False  # wrap each recurrent layer in Bidirectional (concat)
    dropout: float = 0.0  # Dropout after each recurrent layer (the author lecture uses 0.2)
    inputs: str = "one_hot"  # "one_hot" floats; "ids" through a fixed one-hot Embedding;
    #                         "embedding" ids through a learned Embedding of embedding_dim
    embedding_dim: int | None = None  # only for inputs="embedding"
    mask_zero: bool = False  # id 0 (or an all-zero one-hot step) is padding and is skipped
    return_sequences: bool = True  # many-to-many (an output per step) or many-to-one (last)
    output_size: int | None = None  # Dense head units; None: the RNN outputs are the logits
    output_activation: str = "softmax"  # of the Dense head: "softmax" or "linear"
    seq_len: int | None = None  # fixed number of steps, or None for any length
    name: str | None = None


def build_model(config: RNNConfig | None = None, **fields):
    """Builds a lecture RNN: (embedding) -> recurrent layers (-> dropout) -> (Dense head).

    Pass an `RNNConfig`, keyword fields of one, or both (fields override the config).

    Args:
        cell: `"simple_rnn"`, `"lstm"` or `"gru"`.
        input_size: features per step for one-hot input; vocabulary size for id input.
        hidden_size: units of each recurrent layer.
        num_layers, bidirectional, dropout: the stack.
        inputs: `"one_hot"` (float vectors), `"ids"` (integer ids, fixed one-hot Embedding,
            as the sentiment lecture), `"embedding"` (integer ids, learned Embedding).
        mask_zero: treat id 0 / all-zero vectors as padding (Embedding mask or Masking layer).
        return_sequences: True for an output per step, False for the last step only.
        output_size: units of the Dense head, or None to use the RNN outputs as logits
            (the PyTorch lecture, which then needs hidden_size = number of classes).
        output_activation: the head's activation, `"softmax"` or `"linear"`.
        seq_len: fixed timesteps, or None for any length.

    Returns:
        A built `keras.Sequential`. Input `(batch, timesteps, input_size)` floats or
        `(batch, timesteps)` int32 ids; output `(batch, timesteps, classes)` or `(batch, classes)`.

    Example:
        >>> model = build_model(cell="gru", input_size=5, hidden_size=5, output_size=5)
        >>> model.output_shape
        (None, None, 5)
    """
    config = dataclasses.replace(config or RNNConfig(), **_checked_fields(fields))
    _validate(config)
    import keras

    layers = []
    if config.inputs == "one_hot":
        layers.append(keras.Input((config.seq_len, config.input_size), name="inputs"))
        if config.mask_zero:
            layers.append(keras.layers.Masking(mask_value=0.0, name="masking"))
    else:
        layers.append(keras.Input((config.seq_len,), dtype="int32", name="inputs"))
        if config.inputs == "ids":
            layers.append(
                keras.layers.Embedding(
                    config.input_size,
                    config.input_size,
                    embeddings_initializer="identity",
                    trainable=False,
                    mask_zero=config.mask_zero,
                    name="one_hot",
                )
            )
        else:
            layers.append(
                keras.layers.Embedding(
                    config.input_size,
                    config.embedding_dim,
                    mask_zero=config.mask_zero,
                    name="embedding",
                )
            )
    recurrent = keras_layer_class(config.cell)
    for index in range(config.num_layers):
        last = index == config.num_layers - 1
        layer = recurrent(
            config.hidden_size,
            return_sequences=config.return_sequences or not last,
            name=f"{config.cell}_{index + 1}",
        )
        if config.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{index + 1}")
        layers.append(layer)
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{index + 1}"))
    if config.output_size is not None:
        layers.append(
            keras.layers.Dense(config.output_size, activation=config.output_activation,
                               name="head")
        )
    return keras.Sequential(layers, name=config.name or f"{config.cell}_model")


def _checked_fields(fields: dict) -> dict:
    known = {field.name for field in dataclasses.fields(RNNConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"build_model() got unknown arguments {unknown}; expected some of {sorted(known)}."
        )
    return fields


def _positive_int(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"Received an invalid value for `{name}`: expected a positive integer, got {value!r}."
        )


def _validate(config: RNNConfig) -> None:
    if config.cell not in CELLS:
        raise ValueError(
            f"Unknown cell {config.cell!r}: expected one of {', '.join(map(repr, CELLS))}."
        )
    if config.inputs not in INPUTS:
        raise ValueError(
            f"Unknown inputs {config.inputs!r}: expected one of {', '.join(map(repr, INPUTS))}."
        )
    _positive_int("input_size", config.input_size)
    _positive_int("hidden_size", config.hidden_size)
    _positive_int("num_layers", config.num_layers)
    _positive_int("seq_len", config.seq_len, allow_none=True)
    _positive_int("output_size", config.output_size, allow_none=True)
    if config.inputs == "embedding":
        _positive_int("embedding_dim", config.embedding_dim)
    elif config.embedding_dim is not None:
        raise ValueError(
            f"`embedding_dim` is only used with inputs='embedding'; got inputs={config.inputs!r}."
        )
    if not isinstance(config.dropout, (int, float)) or not 0.0 <= config.dropout < 1.0:
        raise ValueError(
            f"Received an invalid value for `dropout`: expected a rate in [0, 1), "
            f"got {config.dropout!r}."
        )
    if config.output_activation not in ("softmax", "linear"):
        raise ValueError(
            f"Unknown output_activation {config.output_activation!r}: expected 'softmax' or "
            "'linear'."
        )
