"""Reading the user's model: its layers (nested models flattened), which of them are built-in
recurrent layers (`describe_recurrent`: their `keras_rnn.structure` description) and which
form each recurrent layer gets in a file.
"""

from __future__ import annotations

from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import (
    Bidirectional,
    Stacked,
    describe_layer,
    describe_stacked,
    is_builtin_recurrent,
    is_stacked_builtin,
)

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402


def describe_recurrent(layer):
    """The `Recurrent`/`Bidirectional`/`Stacked` description of a built-in recurrent layer, or
    None for any other layer (left to the converter)."""
    if isinstance(layer, keras.layers.Bidirectional):
        if not (is_builtin_recurrent(layer.forward_layer)
                and is_builtin_recurrent(layer.backward_layer)):
            return None
    elif is_stacked_builtin(layer):
        return describe_stacked(layer)
    elif not is_builtin_recurrent(layer):
        return None
    return describe_layer(layer)


def cell_runs(description) -> list:
    """The `Recurrent` runs a recurrent description makes: one, both directions, or each
    cell of a stack."""
    if isinstance(description, Bidirectional):
        return [description.forward, description.backward]
    if isinstance(description, Stacked):
        return list(description.layers)
    return [description]


def recurrent_forms(model, native: str) -> dict:
    """Which form each recurrent layer got: `native` for the built-in ones, the converter's
    own loop for the rest (custom cells, ConvLSTM)."""
    forms = {}
    for layer in all_layers(model):
        if describe_recurrent(layer) is not None:
            forms[layer.name] = native
        elif isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) or \
                "ConvLSTM" in type(layer).__name__:
            forms[layer.name] = "converter loop"
    return forms


def all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer
