"""Reading the user's model: its layers (nested models flattened), which of them are built-in
recurrent layers (`describe_recurrent`: their `keras_rnn.structure` description) and which
form each recurrent layer gets in a file.
"""

from __future__ import annotations

from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import (
    Bidirectional,
    Stacked,
    UnsupportedModelError,
    describe_layer,
    describe_stacked,
    is_builtin_recurrent,
    is_stacked_builtin,
)

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402


def describe_recurrent(layer):
    """The `Recurrent`/`Bidirectional`/`Stacked` description of a built-in recurrent layer the
    project writes in its native form, or None for any other layer, left to the converter's
    own form: custom cells, and built-in layers with an option the native forms do not
    write (an activation outside `keras_rnn.structure.RNN_ACTIVATIONS`)."""
    if isinstance(layer, keras.layers.Bidirectional):
        native = (is_builtin_recurrent(layer.forward_layer)
                  and is_builtin_recurrent(layer.backward_layer))
    else:
        native = is_stacked_builtin(layer) or is_builtin_recurrent(layer)
    if not native:
        return None
    try:
        if is_stacked_builtin(layer):
            return describe_stacked(layer)
        return describe_layer(layer, merge_modes=("concat", "sum", "ave", "mul", None))
    except UnsupportedModelError:  # an option the native forms lack: the converter's form
        return None


def cell_runs(description) -> list:
    """The `Recurrent` runs a recurrent description makes: one, both directions, or each
    cell of a stack."""
    if isinstance(description, Bidirectional):
        return [description.forward, description.backward]
    if isinstance(description, Stacked):
        return list(description.layers)
    return [description]


def recurrent_forms(model, native: str, graph=None) -> dict:
    """Which form each recurrent layer got: `native` for the built-in ones, the converter's
    own loop for the rest (custom cells, ConvLSTM). Inside a subclassed model, `native` for
    the layers whose stand-in ran when `graph` (the rebuilt model the file was traced from)
    was traced (`export.model.rebuild.SwappedCalls`), the converter's loop for the others."""
    forms = {}
    swapped = {layer.name: layer for layer in (all_layers(graph) if graph is not None else [])
               if hasattr(layer, "ran_natively")}
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.TimeDistributed):  # the layer it runs at each step
            layer = layer.layer
            if isinstance(layer, keras.Model) and is_graph_model(layer):
                forms.update(recurrent_forms(layer, native))
                continue
        if describe_recurrent(layer) is not None:
            forms[layer.name] = native
        elif _is_recurrent(layer):
            forms[layer.name] = "converter loop"
        elif isinstance(layer, keras.Model):  # subclassed: its call is Python, traced whole
            ran = swapped[layer.name].ran_natively if layer.name in swapped else set()
            forms.update((inner.name, native if inner.name in ran else "converter loop")
                         for inner in sublayers(layer) if _is_recurrent(inner)
                         and not _inside_recurrent(inner, layer))
    return forms


def recurrent_descriptions(model) -> list:
    """The descriptions of the recurrent layers that get a native form: the model's own and
    those inside its subclassed models (`swappable_layers`)."""
    found = []
    for layer in all_layers(model):
        description = describe_recurrent(layer)
        if description is not None:
            found.append(description)
        elif isinstance(layer, keras.Model) and not is_graph_model(layer):
            found.extend(map(describe_recurrent, swappable_layers(layer)))
    return found


def swappable_layers(model) -> list:
    """The built-in recurrent layers a subclassed `model` holds (at any depth, not inside
    another recurrent layer or a TimeDistributed): the layers its Python `call` may call,
    which `export.model.rebuild.SwappedCalls` runs in native form."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if describe_recurrent(layer) is not None:
            found.append(layer)
        elif not (_is_recurrent(layer) or isinstance(layer, keras.layers.TimeDistributed)):
            found.extend(swappable_layers(layer))
    return found


def _inside_recurrent(inner, model) -> bool:
    """True for a layer held by a recurrent layer inside `model` (a Bidirectional's
    directions), which has no form of its own."""
    return any(inner in sublayers(outer) for outer in sublayers(model)
               if outer is not inner and _is_recurrent(outer))


def _is_recurrent(layer) -> bool:
    return (isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
            or "ConvLSTM" in type(layer).__name__)


def all_layers(model):
    """The layers of `model`, nested functional and Sequential models flattened; a subclassed
    model inside is one layer (its `call` is Python: `sublayers`, `swappable_layers`)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from all_layers(layer)
        else:
            yield layer


def is_graph_model(model) -> bool:
    """True for a functional or Sequential model (a graph of layers), False for a subclassed
    one (Python code)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def sublayers(layer) -> list:
    """Every layer inside `layer`, at any depth (cells and wrapped layers included)."""
    return list(layer._flatten_layers(include_self=False, recursive=True))
