"""Streaming step models: one step of a trained network, the recurrent state carried outside.

A device generating text char by char should not re-run the whole prefix for every new
character. A step model takes one step's input and the state, and returns that step's output
and the next state:

    inputs  (batch, features) float32, or (batch,) int32 ids    ->  outputs (batch, classes)
    state_0, state_1, ...  (batch, units) float32 each            ->  next_state_0, ...

States are numbered in layer order; an LSTM layer has two (h, then c), SimpleRNN and GRU one.
Starting from zero states and feeding a sequence step by step gives, at every step, what the
Keras model gives on the sequence so far. Streaming has no padding: feed real steps only (a
mask would make Keras skip a padding step, a step model does not). A model with several inputs
takes one step of each, by name.

`export_step(model, "m.step.tflite")` writes builtin-only TFLite (fixed batch);
`export_step(model, "m.step.onnx")` writes ONNX with the native RNN/LSTM/GRU operators run for
one step (dynamic batch). `export.runtime.StepModel` runs either without TensorFlow. This is
the one step-model path, translators' decoders included (`export.seq2seq`): the lecture chains
and the decoders went through hand-written graphs before, whose ONNX files gave finite numbers
where Keras gives NaN (LSTM, GRU).

The model is rebuilt with `keras.models.clone_model`, as the full-sequence exports do
(`export.model.rebuild`), each built-in recurrent layer replaced by a stand-in that takes its state
from the step model's inputs `state_N` and hands its final state to `next_state_N`; the whole
graph then runs on a sequence of one step and goes through the format's usual converter
(TFLite builtins, tf2onnx with the native recurrent operators spliced in). Every other layer is
Keras's own.

A graph streams when each layer's output at a step depends on that step and the past only:
the built-in recurrent layers running forwards, and layers that act on each step alone
(`STEPWISE`: embeddings, dense layers, normalization, activations, merges of such branches,
TimeDistributed). Anything that reads other steps (convolutions and pooling over time,
attention over the stream, Bidirectional, `go_backwards`, reshapes of the time axis, `keras.ops`
functions other than element-wise ones) is refused, every such layer named with the reason.
Inputs named as `context_inputs` are fed whole at every step (a decoder's encoder outputs):
layers that read only them may read across their own time axis, and an attention layer may
take its query from the stream and its value and key from them.
"""

from __future__ import annotations

import json
from pathlib import Path

from export._files import check_writable, write_atomic
from export.model.layers import all_layers, describe_recurrent
from export.model.rebuild import clone_with, for_export
from export.model.signature import (
    IDS_ADVICE,
    as_list,
    input_specs,
    output_names,
    string_inputs,
    strings_read,
)
from export.model.state import state_labels, states_by_layer
from export.onnx.splice import RecurrentMarker
from export.runtime import state_input_name, state_output_name
from export.tflite.forms import UnrolledRecurrent, unrolled_stand_in
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import (
    Bidirectional,
    Recurrent,
    UnsupportedModelError,
    model_inputs_outputs,
)

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402  (the graph walk below tells layers from operations)

STATES_METADATA = "step_states"  # JSON [[layer name, units], ...] in state order


@for_export
def export_step(model, path, *, batch_size: int = 1, metadata: dict | None = None,
                opset: int | None = None, context_inputs=(), quantize: str | None = None,
                representative_data=None) -> Path:
    """Writes the step model of `model` to `path` (`.tflite` or `.onnx`, by its suffix).

    Args:
        batch_size: the fixed batch of a .tflite step model (ONNX keeps the batch dynamic).
        quantize: None (float32) or one of the format's quantization modes
            (`export.formats`): "dynamic", "float16", "int8" (TFLite, full integer: the file
            for a microcontroller, 1.08-1.10x the model's parameter count in bytes on the
            medium LSTM/GRU) or "dynamic", "float16" (ONNX).
        representative_data: for int8, whole sequences shaped like the model's inputs (an
            array, or a list/dict by input name; the context inputs whole): the float step
            model is run over them from zero states, and every step's inputs and states
            calibrate the ranges (`_step_calibration`).
        metadata: string key/values stored with the file (e.g. the vocabulary); the state
            layout is added as `step_states`.
        opset: ONNX opset (default: `export.onnx.DEFAULT_OPSET`).
        context_inputs: names of inputs fed whole at every step rather than one step at a
            time, e.g. the encoder outputs a decoder attends over (`export.seq2seq`). Layers
            that read only them may read across their time axis; an attention layer may take
            its query from the stream and its value and key from them.

    Raises:
        UnsupportedModelError: the graph cannot run step by step, naming every layer that
            reads other steps.
    """
    from export.formats import format_of, get_quantize_mode
    from export.onnx.exporter import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
    from export.onnx.quantize import quantized

    suffix = Path(path).suffix
    if suffix not in (".tflite", ".onnx"):
        raise ValueError(f"Step model path {str(path)!r} must end in .tflite or .onnx.")
    fmt = format_of(path)
    if quantize not in fmt.quantize:
        raise ValueError(f"Unknown quantize {quantize!r} for a {suffix} step model; expected "
                         f"one of {[mode for mode in fmt.quantize if mode]} or None (float32).")
    calibrated = get_quantize_mode(quantize).needs_calibration
    if calibrated and representative_data is None:
        raise ValueError(f"quantize={quantize!r} needs representative_data: whole sequences "
                         "shaped like the model's inputs (the training data is a good choice).")
    path = check_writable(path, suffix=suffix)
    if suffix == ".tflite":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        data = graph_step_tflite(model, batch_size=batch_size, metadata=metadata,
                                 context_inputs=context_inputs, quantize=quantize,
                                 representative_data=representative_data if calibrated else None)
    else:
        opset = DEFAULT_OPSET if opset is None else opset
        if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, "
                             f"got {opset!r}.")
        data = quantized(graph_step_onnx(model, opset=opset, metadata=metadata,
                                         context_inputs=context_inputs),
                         quantize).SerializeToString()
    return write_atomic(path, data)


# Layers whose output at a step depends on that step's input alone (at inference; those
# with an `axis` only when it is the last one, checked below).
STEPWISE = frozenset({
    "InputLayer", "Embedding", "Masking", "Dense", "Dropout", "SpatialDropout1D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Activation",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "LayerNormalization",
    "BatchNormalization", "Normalization", "UnitNormalization", "RMSNormalization", "Rescaling",
    "Identity", "TimeDistributed", "Add", "Subtract", "Multiply", "Average", "Maximum",
    "Minimum", "Concatenate",
})


# Attention layers stream when their query comes from the stream and their value and key from
# `context_inputs` alone: each step's output then reads that step's query and the context only.
ATTENDING = frozenset({"Attention", "AdditiveAttention"})


def check_streams(model, context_inputs=()) -> list[tuple[str, int]]:
    """Refuses a graph that cannot run step by step, naming every layer that blocks it and
    why; returns the state layout `[(label, units), ...]` of the one that can."""
    model_inputs_outputs(model)
    names = [name for name, _, _ in input_specs(model)]
    strings = string_inputs(model)
    if strings:
        raise UnsupportedModelError(
            f"{strings_read(model, strings)}: step files take numbers (the whole-sequence "
            ".tflite file keeps a StringLookup's table): " + IDS_ADVICE)
    unknown = sorted(set(context_inputs) - set(names))
    if unknown or set(context_inputs) >= set(names):
        raise ValueError(f"context_inputs must name some of the model's inputs {names}, not "
                         f"all of them; got {sorted(context_inputs)}.")
    calls_of, operations = _streamed_calls(model, set(context_inputs))
    blockers, layout = [], []
    for layer in all_layers(model):
        kind = type(layer).__name__
        description = describe_recurrent(layer)
        calls = calls_of.get(id(layer), [])
        stepwise = _stepwise_kind(layer) in STEPWISE
        if calls and not any(any(call) for call in calls):  # reads the context inputs only
            if description is not None:
                blockers.append(f"{layer.name!r} ({kind}) runs over context inputs alone: "
                                "compute it before the step model")
            continue
        if isinstance(description, Bidirectional) or (
                isinstance(description, Recurrent) and description.go_backwards):
            blockers.append(f"{layer.name!r} ({kind}) reads the sequence backwards, so its "
                            "output at a step depends on steps not yet seen")
        elif isinstance(description, Recurrent) and len(calls) > 1:
            blockers.append(f"{layer.name!r} ({kind}) is called {len(calls)} times (a shared "
                            "layer), and a step model keeps one state per layer")
        elif isinstance(description, Recurrent):
            layout += state_labels(layer.name, description)
        elif description is not None:
            blockers.append(f"{layer.name!r} ({kind}): a stack of cells does not stream yet")
        elif kind in ATTENDING and calls and all(
                not any(call[1:]) and not call.causal for call in calls):
            continue  # a streamed query over the context
        elif stepwise and not _on_last_axis(layer):
            blockers.append(f"{layer.name!r} ({kind} on axis {getattr(layer, 'axis', None)}) "
                            "works across the time axis, not on each step")
        elif not stepwise:
            blockers.append(f"{layer.name!r} ({kind}) is not one of the layers that act on each "
                            "step alone, so its output may read other steps")
    blockers += [f"the operation {kind!r} on a streamed tensor may read other steps (only "
                 "element-wise operations stream)" for kind in sorted(operations)]
    if blockers:
        raise UnsupportedModelError(
            f"Model {model.name!r} cannot be streamed step by step: {'; '.join(blockers)}. "
            "Export the whole-sequence model instead.")
    if not layout:
        raise UnsupportedModelError(f"Model {model.name!r} has no recurrent layer to stream.")
    for name, shape, dtype in input_specs(model):
        if name in context_inputs:
            continue
        if len(shape) < 2 or (len(shape) == 2 and "int" not in dtype):
            raise UnsupportedModelError(
                f"Input {name!r} of shape {shape} has no time axis: a step model takes one "
                "step of every input (ids (batch, time) or features (batch, time, ...)).")
    return layout


# Keras operations (functions of `keras.ops` in a functional graph, not layers) that act on
# each value alone, so on each step alone
ELEMENTWISE_OPS = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Abs", "Square",
    "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Cast", "Equal", "NotEqual", "Greater",
    "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr", "LogicalNot", "Maximum",
    "Minimum", "Where", "Clip", "Power",
})


class _Call(tuple):
    """Per input tensor of one call of a layer: whether it depends on a streamed input."""

    causal = False


def _streamed_calls(model, context: set) -> dict:
    """`({id(layer): [a _Call per call of the layer in model]}, {the kinds of non-element-wise
    operations on streamed tensors})`, from the model's graph walked back from its outputs
    (every node reachable in this model, none of other models sharing a layer)."""
    inputs, outputs = model_inputs_outputs(model)
    input_names = dict(zip(map(id, inputs), [name for name, _, _ in input_specs(model)]))
    memo, calls, ops = {}, {}, set()

    def streamed(tensor) -> bool:
        if id(tensor) in memo:
            return memo[id(tensor)]
        if id(tensor) in input_names:
            memo[id(tensor)] = input_names[id(tensor)] not in context
            return memo[id(tensor)]
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        memo[id(tensor)] = False  # (a graph has no cycles; this only guards the recursion)
        flags = _Call(streamed(value) for value in node.input_tensors)
        flags.causal = bool(node.arguments.kwargs.get("use_causal_mask"))
        if isinstance(operation, keras.layers.Layer):
            calls.setdefault(id(operation), []).append(flags)
        elif any(flags) and type(operation).__name__ not in ELEMENTWISE_OPS:
            ops.add(type(operation).__name__)
        memo[id(tensor)] = any(flags)
        return memo[id(tensor)]

    for tensor in outputs:
        streamed(tensor)
    return calls, ops


def _stepwise_kind(layer) -> str:
    """The Keras class whose computation the layer runs: its own, or that of the Keras layer
    it subclasses without overriding `call` (a `VocabularyEmbedding` is an `Embedding`)."""
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras."):
            return cls.__name__
        if "call" in vars(cls):
            break
    return type(layer).__name__


def _on_last_axis(layer) -> bool:
    """True unless the layer has an `axis` other than the last of its output."""
    axis = getattr(layer, "axis", None)
    if axis is None:
        return True
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    try:
        rank = len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer used at several places: judge by -1 only
        return axes == [-1]
    return all(a in (-1, rank - 1) for a in axes)


class _FromGivenStates:
    """Runs a format's recurrent stand-in (with `run_with_states`) from the states the step
    model is given, handing its final states on through `channel` (mixed in before it)."""

    channel = None  # a _Channel, set per trace

    def call(self, inputs, mask=None, initial_state=None, training=None):
        if initial_state is not None:
            raise UnsupportedModelError(
                f"Layer {self.name!r} is called with initial_state=: in a step model its "
                "state is the input state_N (give the initial state there at the first "
                "step); export the whole-sequence model otherwise.")
        # (no mask: a step model is fed real steps only, as this module documents)
        results = self.run_with_states(inputs, self.channel.given[self.name])
        self.channel.final[self.name] = results[1:]
        return results if self.return_state else results[0]


class UnrolledStep(_FromGivenStates, UnrolledRecurrent):
    """TFLite: the unrolled cell run for the given steps from the given states."""


class MarkerStep(_FromGivenStates, RecurrentMarker):
    """ONNX: the marker spliced into the native operator, run from the given states."""


class _Channel:
    """The states a trace gives each recurrent layer and those it hands back, by layer (an
    object, not a dict, which a Keras layer attribute would copy into a tracked one)."""

    def __init__(self):
        self.given, self.final = {}, {}


def _step_function(model, layout, stand_in, *, batched_dense: bool, context_inputs=(),
                   whole=None):
    """The step as a Python function of TF ops over (one step of each input, then the
    states): the rebuilt graph run on a sequence of one step (the context inputs whole).
    `stand_in(original, description)` makes each recurrent layer's step stand-in, `whole` the
    whole-sequence one of a recurrent layer inside TimeDistributed (run within one step)."""
    import tensorflow as tf

    channel = _Channel()

    def with_channel(original, description):
        layer = stand_in(original, description)
        layer.channel = channel
        return layer

    graph = clone_with(_free_time(model, context_inputs), with_channel,
                       batched_dense=batched_dense, time_distributed=whole)
    whole = [name in context_inputs for name, _, _ in input_specs(model)]
    input_count = len(whole)
    names = output_names(model)
    owners = states_by_layer(layout)  # layer -> its states' indices, in layout order

    def step(*arguments):
        inputs = [value if is_whole else tf.expand_dims(value, 1)
                  for value, is_whole in zip(arguments[:input_count], whole)]
        states = arguments[input_count:]
        channel.final.clear()
        for owner, indices in owners.items():
            channel.given[owner] = [states[index] for index in indices]
        results = as_list(graph(inputs[0] if len(inputs) == 1 else inputs, training=False))
        # a sequence output (batch, 1, ...) is this step's output (batch, ...)
        outputs = {name: tf.squeeze(value, 1) if value.shape.rank >= 3 else value
                   for name, value in zip(names, results)}
        finals = [state for owner in owners for state in channel.final[owner]]
        outputs.update({state_output_name(i): state for i, state in enumerate(finals)})
        return outputs

    return step


def _free_time(model, context_inputs=()):
    """`model` itself, or, when a streamed input has a fixed time axis (`keras.Input((50, 8))`),
    the same layers called on inputs of any length: a step feeds one step at a time, which
    Keras's input check would refuse against the fixed length."""
    specs = input_specs(model)
    fixed = [name for name, shape, _ in specs
             if name not in context_inputs and len(shape) > 1 and shape[1] is not None]
    if not fixed:
        return model
    inputs = [keras.Input(shape=(None,) + tuple(shape[2:]) if name in fixed else shape[1:],
                          dtype=dtype, name=name)
              for name, shape, dtype in specs]
    return keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0],
                                    clone_function=lambda layer: layer)


def _step_specs(model, layout, batch, context_inputs=()):
    import tensorflow as tf

    specs = [tf.TensorSpec((batch,) + tuple(shape[1 if name in context_inputs else 2:]), dtype,
                           name=name)
             for name, shape, dtype in input_specs(model)]
    specs += [tf.TensorSpec((batch, units), tf.float32, name=state_input_name(i))
              for i, (_, units) in enumerate(layout)]
    return specs


@for_export
def graph_step_tflite(model, *, batch_size: int, metadata: dict | None,
                      context_inputs=(), quantize: str | None = None,
                      representative_data=None) -> bytes:
    """The builtin-only `.tflite` step model of a graph that streams (see the module),
    quantized as `quantize` names (`representative_data`: int8's whole sequences)."""
    from export.formats import get_quantize_mode
    from export.model.signature import freeze
    from export.tflite.flatbuffer import add_metadata, convert, frozen_converter

    mode = get_quantize_mode(quantize)
    layout = check_streams(model, context_inputs)
    specs = _step_specs(model, layout, batch_size, context_inputs)
    for spec in specs:
        if None in spec.shape:
            raise ValueError(f"Input {spec.name!r} has shape {tuple(spec.shape)} in the step "
                             "model: a .tflite file needs every axis but the batch fixed.")
    step = _step_function(model, layout, UnrolledStep, batched_dense=False,
                          context_inputs=context_inputs, whole=unrolled_stand_in)
    names = output_names(model) + [state_output_name(i) for i in range(len(layout))]
    frozen = freeze(step, specs)
    calibration = None
    if mode.needs_calibration:
        calibration = _step_calibration(model, layout, representative_data, batch_size,
                                        context_inputs)
    tf = load_tensorflow()
    converter = frozen_converter(frozen, specs, names)
    mode.configure(converter, tf, calibration)  # (int8: one scale per tensor, export.formats)
    flatbuffer = convert(converter, [layer.name for layer in all_layers(model)])
    return add_metadata(flatbuffer, {**(metadata or {}), STATES_METADATA: json.dumps(layout)},
                        io_names=([spec.name for spec in specs], names),
                        lean=mode.needs_calibration)


# calibration batches an int8 step model is converted with at most (the converter runs each
# through TensorFlow's interpreter: about 0.3 ms a step on the medium models)
MAX_CALIBRATION_STEPS = 2000


def _step_calibration(model, layout, data, batch_size: int, context_inputs=()):
    """The int8 calibration of a step model: the float step model (traced with any batch) is
    run over the whole sequences `data` from zero states, as a device runs it, and each step's
    inputs and the states it was given become one sample (evenly thinned to
    `MAX_CALIBRATION_STEPS` batches), checked and yielded by input name in the file's batch by
    `calibration_batches`, as a full-sequence file's calibration is. The ranges of the states
    are what the int8 file needs most; a state the float step never reaches would be clipped."""
    import numpy as np

    from export.model.signature import freeze
    from export.tflite.quantize import calibration_batches

    tf = load_tensorflow()
    specs = input_specs(model)
    streamed = [name for name, _, _ in specs if name not in context_inputs]
    if isinstance(data, dict):
        given = data
    elif isinstance(data, (list, tuple)) and len(specs) > 1:
        given = dict(zip([name for name, _, _ in specs], data))
    else:
        given = {specs[0][0]: data}
    shapes = {name: np.shape(array) for name, array in given.items()}
    # the data checked (shapes, dtypes, finite values) as a full-sequence file's calibration;
    # the free axes take the data's own sizes
    fixed = [(name, (None,) + tuple(
        size if size is not None else (shapes.get(name, ()) + (None,) * len(shape))[axis]
        for axis, size in enumerate(shape) if axis > 0), dtype)
             for name, shape, dtype in specs]
    rows = max((len(array) for array in given.values() if np.ndim(array)), default=1)
    whole = next(calibration_batches(fixed, data, rows)())  # one batch: every row
    length = max(whole[name].shape[1] for name in streamed)
    if length == 0:
        raise ValueError("representative_data has sequences of no steps: nothing to calibrate.")
    step_specs = _step_specs(model, layout, None, context_inputs)
    step = freeze(_step_function(model, layout, UnrolledStep, batched_dense=False,
                                 context_inputs=context_inputs, whole=unrolled_stand_in),
                  step_specs)
    names = sorted(output_names(model) + [state_output_name(i) for i in range(len(layout))])
    states = [np.zeros((rows, units), np.float32) for _, units in layout]
    given_states = []  # per step: the states it was given
    for t in range(length):
        feeds = {name: (whole[name] if name not in streamed else whole[name][:, t])
                 for name, _, _ in specs}
        given_states.append(states)
        feeds.update({state_input_name(i): state for i, state in enumerate(states)})
        results = step(*[tf.constant(feeds[spec.name]) for spec in step_specs])
        if not isinstance(results, dict):
            results = dict(zip(names, tf.nest.flatten(results)))
        states = [np.asarray(results[state_output_name(i)]) for i in range(len(layout))]
    # the samples (step, row), evenly thinned, then checked and batched as any calibration
    samples = np.arange(length * rows)[::max(1, length * rows // (
        MAX_CALIBRATION_STEPS * batch_size))]
    at, row = np.divmod(samples, rows)
    chosen = {name: whole[name][row, at] if name in streamed else whole[name][row]
              for name, _, _ in specs}
    chosen.update({state_input_name(i): np.stack([given[i] for given in given_states])[at, row]
                   for i in range(len(layout))})
    fixed = [(spec.name, tuple(spec.shape), spec.dtype.as_numpy_dtype)
             for spec in _step_specs(model, layout, batch_size, context_inputs)]
    return calibration_batches(fixed, chosen, batch_size)


@for_export
def graph_step_onnx(model, *, opset: int, metadata: dict | None, context_inputs=()):
    """The ONNX step model of a graph that streams, each recurrent layer its native operator
    run for one step from `state_N` (dynamic batch)."""
    from export.model.signature import freeze
    from export.onnx.exporter import converted_graph
    from export.onnx.splice import marker_maker

    layout = check_streams(model, context_inputs)
    specs = _step_specs(model, layout, None, context_inputs)
    markers = {}
    stand_in = marker_maker(markers, MarkerStep)
    step = _step_function(model, layout, stand_in, batched_dense=True,
                          context_inputs=context_inputs, whole=marker_maker(markers))
    # loops kept as loops, as tf2onnx's own loader freezes them
    frozen = freeze(step, specs, lower_control_flow=False, aggressive_inlining=True)
    shapes = {name: (shape[:1] + shape[2:]) if len(shape) >= 3 else shape  # one step
              for name, shape in zip(output_names(model), (
                  tuple(tensor.shape) for tensor in model_inputs_outputs(model)[1]))}
    shapes.update({state_output_name(i): (None, units) for i, (_, units) in enumerate(layout)})
    return converted_graph(
        frozen, markers, opset, input_names=[spec.name for spec in specs],
        # (in sorted order, as the function's dict of outputs flattens)
        outputs=[(name, shapes[name]) for name in sorted(shapes)], carried_states={},
        metadata={**(metadata or {}), STATES_METADATA: json.dumps(layout)})
