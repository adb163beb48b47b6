"""Any Keras model graph, rebuilt for export with its recurrent layers in native form.

One path per format for the whole graph: `keras.models.clone_model` rebuilds the user's model
(Sequential, functional or nested; branches, merges, several inputs and outputs, layers called
with `mask=` or `initial_state=`) layer by layer, every layer reused as it is (same weights)
except the built-in recurrent layers (`SimpleRNN`, `LSTM`, `GRU`, `keras.layers.RNN` over their
cells, and `Bidirectional` of those), which become a stand-in of the same name:

- for TFLite, `UnrolledRecurrent`: the time loop written out step by step from the trained
  weights (`export.tflite.run_recurrent`), the fastest builtin form measured here, then the
  whole graph goes through the TFLite converter (builtin ops only);
- for ONNX, `RecurrentMarker`: an opaque op that tf2onnx hands to `export.onnx` (the
  `custom_op_handlers` hook), which replaces it by the native `RNN`/`LSTM`/`GRU` operator
  (tf2onnx itself would write GRU and SimpleRNN as a slow generic `Loop`).

Every other layer (convolutions, pooling, normalization, reshapes, merges, attention,
TimeDistributed of anything, custom cells, ConvLSTM) is converted by the standard converter,
as Keras computes it; masks flow between layers as Keras propagates them.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from export.runtime import MAIN_INPUT, MAIN_OUTPUT, state_input_name
from keras_rnn.cells import cell
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import (
    Bidirectional,
    Stacked,
    UnsupportedModelError,
    describe_layer,
    describe_stacked,
    is_builtin_recurrent,
    is_stacked_builtin,
    model_inputs_outputs,
)

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402  (the stand-in layers below are Keras layers)

# a model with one input and one output keeps the runtime's default names
SINGLE_INPUT_NAME, SINGLE_OUTPUT_NAME = MAIN_INPUT, MAIN_OUTPUT


def check_exportable(model, *, carried_state: bool = True) -> None:
    """Refuses, before any work, what no export path writes correctly, naming every layer.
    `carried_state=False` (ONNX, where the state travels as graph inputs and outputs that
    only the built-in recurrent layers get) refuses every other stateful layer."""
    model_inputs_outputs(model)
    if not carried_state:
        other = [layer.name for layer in all_layers(model)
                 if getattr(layer, "stateful", False) and describe_recurrent(layer) is None]
        if other:
            raise UnsupportedModelError(
                f"Layers {other} are stateful=True but not SimpleRNN/LSTM/GRU (or RNN over "
                "their cells): their state cannot become the file's inputs and outputs, and "
                "the converter would freeze it into constants (silently wrong from the second "
                "call on). Export to .tflite, which keeps any layer's state between calls.")
    names = [name for name, _, _ in input_specs(model)]
    clashes = sorted(set(names) & {state_input_name(i) for i in range(len(state_layout(model)))})
    if clashes:
        raise UnsupportedModelError(
            f"Model inputs {clashes} have the names the exported file gives the stateful "
            "layers' states: rename them with keras.Input(name=...).")


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


def state_sizes(description) -> list[int]:
    """The units of each state Keras returns with `return_state=True`, in its order."""
    if isinstance(description, Stacked):
        return []  # (described only without return_state)
    return [units for _, units in state_labels("", description)]


class RecurrentStandIn(keras.layers.Layer):
    """A built-in recurrent layer's place in the cloned graph: same name, same inputs,
    outputs, masks and states; subclasses write its computation for one format."""

    def __init__(self, original, description):
        super().__init__(name=original.name)
        self.description = description
        self.return_sequences = bool(original.return_sequences)
        self.return_state = bool(original.return_state)
        self.supports_masking = True
        # stateful=True: the original layer's state variables (a call, not an attribute,
        # so the stand-in does not track them as its own)
        self.kept_states = functools.partial(state_variables, original)

    def _output_specs(self, batch, steps, *, with_states=None):
        """The outputs' specs: a list with the final states when `with_states` (default:
        as the layer returns them), else the outputs alone."""
        with_states = self.return_state if with_states is None else with_states
        units = self.description.units
        shape = (batch, steps, units) if self.return_sequences else (batch, units)
        outputs = [keras.KerasTensor(shape, "float32")]
        if with_states:
            outputs += [keras.KerasTensor((batch, size), "float32")
                        for size in state_sizes(self.description)]
        return outputs if with_states else outputs[0]

    def compute_output_spec(self, inputs, mask=None, initial_state=None, training=None):
        self.known_input_shape = tuple(inputs.shape)  # for a trace that loses it
        return self._output_specs(inputs.shape[0], inputs.shape[1])

    def with_known_shape(self, inputs):
        """`inputs` with the static shape Keras inferred, where the traced graph lost it
        (after an op of unknown output shape)."""
        if inputs.shape.rank is None and hasattr(self, "known_input_shape"):
            inputs.set_shape(self.known_input_shape)
        return inputs

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(state_sizes(self.description))
        return output_mask


def clone_with(model, stand_in, *, batched_dense: bool = False):
    """`model` rebuilt with each built-in recurrent layer replaced by `stand_in(layer,
    description)`; every other layer is reused as is (its weights included), but for
    `TimeDistributed`, which becomes one reshape around its inner layer (`FlatTimeDistributed`),
    and with `batched_dense` (for ONNX), `Dense` (`BatchedDense`)."""
    def clone_function(layer):
        if isinstance(layer, keras.layers.TimeDistributed) and not getattr(
                layer.layer, "_call_has_mask_arg", False):
            return FlatTimeDistributed(layer)
        if (batched_dense and type(layer) is keras.layers.Dense
                and getattr(layer, "quantization_mode", None) is None
                and not getattr(layer, "lora_enabled", False)):
            return BatchedDense(layer)
        description = describe_recurrent(layer)
        return layer if description is None else stand_in(layer, description)

    try:
        return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    except UnsupportedModelError:
        raise
    except Exception as error:  # Keras's own messages for graphs it cannot rebuild
        raise UnsupportedModelError(
            f"Model {model.name!r} could not be rebuilt for export ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no message'})."
        ) from error


class FlatTimeDistributed(keras.layers.Layer):
    """`TimeDistributed(layer)` as Keras computes it for a static time axis, written as one
    reshape: (batch, time, ...) -> (batch * time, ...) -> the layer -> back. Keras itself
    runs a free time axis through `vectorized_map`, a while loop that tf2onnx converts
    into a `Loop` with wrong shapes, and that would be slow anyway."""

    def __init__(self, original):
        super().__init__(name=original.name)
        self.inner = original.layer
        self.original = original
        self.supports_masking = True

    def compute_output_spec(self, inputs, mask=None, training=None):
        return keras.KerasTensor(self.original.compute_output_shape(inputs.shape),
                                 inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def call(self, inputs, mask=None, training=None):
        ops = keras.ops
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        outputs = self.inner(flat, training=False)
        return ops.reshape(outputs, (shape[0], shape[1]) + tuple(outputs.shape[1:]))


class BatchedDense(keras.layers.Layer):
    """`Dense` on inputs of rank above 2 as one batched matmul, which ONNX's MatMul
    broadcasts over the leading axes. Keras's TensorFlow backend writes it as a tensordot
    (reshapes around a 2-D matmul and the shape arithmetic between them), which tf2onnx
    copies node for node: 8 nodes for 1, a measurable share of a lecture-size model's time
    in ONNX Runtime (`benchmarks/latency.py`). Same weights, same ops otherwise."""

    def __init__(self, original):
        super().__init__(name=original.name)
        self.original = original
        self.supports_masking = True

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.original.compute_output_shape(inputs.shape),
                                 inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def call(self, inputs, training=None):
        import tensorflow as tf

        dense = self.original
        if inputs.shape.rank is None or inputs.shape.rank <= 2:
            return dense(inputs)
        outputs = tf.linalg.matmul(inputs, dense.kernel.value)
        if dense.bias is not None:
            outputs = outputs + dense.bias.value
        return dense.activation(outputs)


def input_specs(model):
    """`(name, shape, dtype)` of each model input; a single input is named "inputs"."""
    inputs = model_inputs_outputs(model)[0]
    if len(inputs) == 1:
        names = [SINGLE_INPUT_NAME]
    else:
        names = [tensor.name for tensor in inputs]
        if len(set(names)) != len(names):
            raise UnsupportedModelError(f"Model {model.name!r} has inputs with the same name "
                                        f"{names}: name them with keras.Input(name=...).")
    return [(name, tuple(tensor.shape), str(tensor.dtype)) for name, tensor in zip(names, inputs)]


def output_names(model) -> list[str]:
    """The exported outputs' names: the model's own output names ("outputs" for one)."""
    outputs = model_inputs_outputs(model)[1]
    if len(outputs) == 1:
        return [SINGLE_OUTPUT_NAME]
    names = list(getattr(model, "output_names", None) or [t.name for t in outputs])
    if len(set(names)) != len(names):
        names = [f"output_{index}" for index in range(len(outputs))]
    return names


def as_list(outputs) -> list:
    """A model's outputs (a tensor, list or dict) as a list in `model.outputs` order."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def frozen_inference(graph, model, signature, **freeze_options):
    """`graph` (the model or its rebuilt clone) traced on `signature`, returning its outputs
    as a dict under the exported names (`output_names(model)`), with the weights and the
    tensors the layers captured (an adapted Normalization's mean) frozen into constants: a file
    with variables would need initialising on the device, and tf2onnx would make captured
    tensors extra graph inputs. `freeze_options` go to `convert_variables_to_constants_v2`."""
    return freeze(named_inference(graph, model), signature, **freeze_options)


def named_inference(graph, model):
    """`graph` (the model or its rebuilt clone) as a function of the model's inputs, in order,
    returning its outputs as a dict under the exported names (`output_names(model)`)."""
    names = output_names(model)

    def inference(*inputs):
        results = graph(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(names, as_list(results)))

    return inference


def freeze(function, signature, **freeze_options):
    """`function` traced on `signature` with every variable and captured tensor frozen into
    constants (see `frozen_inference`)."""
    import tensorflow as tf

    # (TensorFlow's own freezing, the one its converters use; it has no public name)
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    traced = tf.function(function, input_signature=signature, autograph=False)
    return convert_variables_to_constants_v2(traced.get_concrete_function(), **freeze_options)


def keras_outputs(model, feeds: dict) -> dict:
    """Runs the Keras model on named inputs (the exported names); returns named outputs."""
    import warnings

    names = [name for name, _, _ in input_specs(model)]
    arguments = [feeds[name] for name in names]
    with warnings.catch_warnings():
        # verify's one-step inputs make an attention softmax run over a single key, which
        # Keras flags; the comparison itself is what matters there
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        results = model(arguments[0] if len(arguments) == 1 else arguments, training=False)
    return {name: np.asarray(value) for name, value in zip(output_names(model), as_list(results))}


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
