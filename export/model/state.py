"""The state a model carries between calls: its stateful layers' variables, the layout of the
states a file takes and returns (`state_layout`), and a reset state for the duration of an
export or a comparison (`states_reset`).
"""

from __future__ import annotations

import contextlib

import numpy as np

from export.model.layers import all_layers, describe_recurrent
from keras_rnn.cells import cell
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import (
    Bidirectional,
    Stacked,
)

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402


def state_variables(layer) -> list:
    """The variables a stateful layer keeps its state in between calls (both directions of
    a Bidirectional, forward first), in Keras's state order (h, then c for LSTM)."""
    if isinstance(layer, keras.layers.Bidirectional):
        return state_variables(layer.forward_layer) + state_variables(layer.backward_layer)
    if not getattr(layer, "stateful", False) or getattr(layer, "states", None) is None:
        return []
    return list(keras.tree.flatten(layer.states))


def stateful_layers(model) -> list:
    """The layers of `model` with `stateful=True`, in graph order."""
    return [layer for layer in all_layers(model) if state_variables(layer)]


def stateful_batch(model) -> int | None:
    """The batch size a stateful model's state is kept for (one row per batch row), or None
    for a model without stateful layers."""
    stateful = stateful_layers(model)
    return int(state_variables(stateful[0])[0].shape[0]) if stateful else None


def state_labels(name: str, description) -> list[tuple[str, int]]:
    """`(label, units)` of each state a recurrent layer `name` carries, in Keras's order: per
    direction `h`, then `c` for LSTM ("encoder/forward/h", ... for a Bidirectional)."""
    directions = ([("forward/", description.forward), ("backward/", description.backward)]
                  if isinstance(description, Bidirectional) else [("", description)])
    return [(f"{name}/{prefix}{which}", direction.units) for prefix, direction in directions
            for which in cell(direction.cell).states]


def state_layout(model, *, every: bool = False) -> list[tuple[str, int]]:
    """`(label, units)` of each state the stateful built-in recurrent layers carry between
    calls, in the order of the exported file's state inputs and outputs: layers in graph
    order, then Keras's state order (`state_labels`). `every=True` adds the other stateful
    layers' states ("layer/state_N", their size)."""
    layout = []
    for layer in stateful_layers(model):
        description = describe_recurrent(layer)
        if description is not None:
            layout += state_labels(layer.name, description)
        elif every:
            layout += [(f"{layer.name}/state_{index}", int(np.prod(variable.shape[1:])))
                       for index, variable in enumerate(state_variables(layer))]
    return layout


def states_by_layer(layout) -> dict[str, list[int]]:
    """{layer name: the indices of its states in `layout`}, in layout order."""
    owners = {}
    for index, (label, _) in enumerate(layout):
        owners.setdefault(label.split("/", 1)[0], []).append(index)
    return owners


@contextlib.contextmanager
def states_reset(model):
    """The stateful layers' state zeroed (as `layer.reset_state()` does) for the duration,
    then put back as it was: an export starts its file from a reset state, and `verify`
    compares the file with the model from one, without changing the user's model."""
    variables = [variable for layer in stateful_layers(model)
                 for variable in state_variables(layer)]
    kept = [np.array(variable.numpy()) for variable in variables]
    try:
        for variable in variables:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        yield
    finally:
        for variable, value in zip(variables, kept):
            variable.assign(value)


def state_sizes(description) -> list[int]:
    """The units of each state Keras returns with `return_state=True`, in its order."""
    if isinstance(description, Stacked):
        return []  # (described only without return_state)
    return [units for _, units in state_labels("", description)]
