"""Keras model -> ONNX with the native recurrent operators (`RNN`, `LSTM`, `GRU`).

The whole graph goes through tf2onnx, the standard converter, except the built-in recurrent
layers: `export.graph` rebuilds the model with each of them replaced by an opaque marker op,
tf2onnx hands every marker to `_mark_recurrent` (its `custom_op_handlers` hook), and
`_splice_markers` then writes each one as the native operator from the layer's trained
weights. tf2onnx alone would write GRU and SimpleRNN as a generic `Loop`, several times slower
in ONNX Runtime, and cannot reproduce Keras's masks with the native operators. The batch axis
is dynamic, and the time axis wherever the model allows.

Masks: a `mask_zero` Embedding or a `Masking` layer gives a (batch, time) mask, and each
recurrent layer reproduces Keras's masking exactly for any pattern (padding at the start, the
end, or steps masked in the middle of a row): the unmasked steps of each row are gathered to
its front, the native operator runs them with `sequence_lens`, and every output is gathered back
to its step, a masked step repeating the output of the step before it in processing order (or
zeros, with `zero_output_for_mask`), as Keras's time loop does. See `PaddingMask`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from export.graph import (
    RecurrentStandIn,
    check_exportable,
    clone_with,
    frozen_inference,
    input_specs,
    output_names,
    recurrent_forms,
    state_layout,
    state_sizes,
    states_by_layer,
)
from export.runtime import (
    FORMS_METADATA,
    STATEFUL_METADATA,
    state_input_name,
    state_output_name,
)
from keras_rnn.cells import cell
from keras_rnn.quiet import load_tensorflow, native_stderr_silenced
from keras_rnn.structure import (
    Bidirectional,
    Dense,
    Recurrent,
    Stacked,
    UnsupportedModelError,
)

DEFAULT_OPSET = 17
MIN_OPSET = 14  # Softmax over the last axis alone, ReduceSum with axes as an input
MAX_OPSET = 21  # the newest opset checked against onnxruntime 1.31 here
MARKER_DOMAIN = "keras_rnn.marker"  # the opaque recurrent nodes between tf2onnx and the splice
MARKER_OP = "Recurrent"
MARKER_PREFIX = "keras_rnn_recurrent_"
# Keras activation -> the ONNX recurrent operators' activation, with its (alpha, beta) when it
# takes them. Keras 3's hard_sigmoid is clip(x / 6 + 0.5, 0, 1); linear is Affine(1, 0).
_ONNX_ACTIVATIONS = {"tanh": ("Tanh", None), "sigmoid": ("Sigmoid", None),
                     "relu": ("Relu", None), "hard_sigmoid": ("HardSigmoid", (1 / 6, 0.5)),
                     "linear": ("Affine", (1.0, 0.0))}
_HEAD_OPS = {"softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def export_onnx(model, path, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None) -> Path:
    """Exports a Keras RNN model to an ONNX file that ONNX Runtime runs.

    Args:
        model: a built Keras model: any graph that tf2onnx converts (Sequential, functional,
            several inputs and outputs), the built-in recurrent layers as native operators.
        path: the `.onnx` file to write; written atomically (no partial file on failure).
        opset: ONNX opset, from 14 to 21.
        metadata: string key/values stored in `metadata_props` (e.g. the vocabulary, see
            `export.metadata`), readable by any ONNX runtime.

    Returns:
        The written path. A model with one input and one output has `inputs` /
        `outputs`; otherwise the model's own input and output names. Batch and time axes
        are dynamic wherever the model allows.
    """
    path = check_writable(path, suffix=".onnx")
    proto = build_onnx(model, opset=opset, metadata=metadata)
    return write_atomic(path, proto.SerializeToString())


def build_onnx(model, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """The ONNX `ModelProto` for `model`, checked with `onnx.checker` (full check)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}.")

    check_exportable(model, carried_state=False)
    tf = load_tensorflow()
    markers = {}
    graph = clone_with(model, marker_maker(markers), batched_dense=True)
    names = output_names(model)
    signature = [tf.TensorSpec((None,) + shape[1:], dtype, name=name)
                 for name, shape, dtype in input_specs(model)]

    # loops kept as loops, as tf2onnx's own loader freezes them
    frozen = frozen_inference(graph, model, signature, lower_control_flow=False,
                              aggressive_inlining=True)
    shapes = dict(zip(names, (tuple(tensor.shape) for tensor in model.outputs)))
    forms = recurrent_forms(model, "native operator")
    metadata = {**(metadata or {}), FORMS_METADATA: json.dumps(forms)}
    layout = state_layout(model)
    if layout:
        metadata[STATEFUL_METADATA] = json.dumps(layout)
    proto = converted_graph(frozen, markers, opset, input_names=[spec.name for spec in signature],
                            outputs=[(name, shapes[name]) for name in sorted(names)],
                            carried_states=states_by_layer(layout), metadata=metadata)
    if any(node.op_type in ("Loop", "Scan") for node in proto.graph.node):
        for layer, form in forms.items():
            if form != "native operator":
                forms[layer] = "Loop"
        _set_metadata(proto, FORMS_METADATA, json.dumps(forms))
    return proto


def marker_maker(markers: dict, cls=None):
    """The stand-in maker for `clone_with`: each built-in recurrent layer becomes a numbered
    `cls` (default `RecurrentMarker`), registered in `markers` by its number."""

    def make(original, description):
        marker = (cls or RecurrentMarker)(original, description, len(markers))
        markers[marker.marker_id] = marker
        return marker

    return make


def converted_graph(frozen, markers: dict, opset: int, *, input_names, outputs,
                    carried_states: dict, metadata: dict):
    """The checked ONNX model of a frozen traced function whose recurrent layers are
    `markers`: tf2onnx for everything else, each marker spliced into its native operator
    (`carried_states`: the stateful layers' state indices, `states_by_layer`), Python ops
    refused, inputs and `outputs` ((name, shape) in the function's flattened order) named."""
    proto = _tf2onnx(frozen, opset, markers)
    _splice_markers(proto, markers, opset, carried_states)
    _refuse_unknown_ops(proto)
    _name_inputs(proto, input_names)
    _name_outputs(proto, outputs)
    return finish_model(proto.graph, opset, metadata,
                        extra_opsets=[o for o in proto.opset_import
                                      if o.domain not in ("", MARKER_DOMAIN)])


def _set_metadata(proto, key: str, value: str) -> None:
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value


def _tf2onnx(frozen, opset: int, markers: dict):
    """tf2onnx on the frozen traced function, each recurrent marker left as an opaque node,
    without its terminal output (its INFO logging and TensorFlow's native start-up lines)."""
    import logging

    import onnx
    import tf2onnx

    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(add_shapes=True), opset=opset,
                input_names=[tensor.name for tensor in frozen.inputs],
                output_names=[tensor.name for tensor in frozen.outputs],
                # (the old-style handler list: its first entry is the ONNX op type)
                custom_op_handlers={op: (_mark_recurrent, [MARKER_OP, markers])
                                    for op in ("PyFunc", "PyFuncStateless")},
                extra_opset=[onnx.helper.make_opsetid(MARKER_DOMAIN, 1)])
    except Exception as error:
        lines = str(error).strip().splitlines()
        raise UnsupportedModelError(
            "tf2onnx could not convert the model: "
            f"{lines[-1] if lines else type(error).__name__}") from error
    finally:
        tf2onnx_logger.setLevel(level)
    return proto


def _mark_recurrent(ctx, node, name, args):
    """tf2onnx's handler for the markers' PyFunc ops: an opaque node that keeps its inputs and
    outputs and names the recurrent layer it stands for."""
    import onnx

    match = re.search(rf"{MARKER_PREFIX}(\d+)", node.name)
    if match is None:  # the user's own tf.numpy_function: refused by _refuse_unknown_ops
        node.type, node.domain = "PyFunc", ""  # (tf2onnx set the marker type already)
        return node
    node.type, node.domain = MARKER_OP, MARKER_DOMAIN
    marker_id = int(match.group(1))
    node.set_attr("marker", marker_id)
    # the converter cannot infer an opaque op's outputs; later ops (Concat on axis -1, the
    # reshapes of TimeDistributed) need their rank and known sizes
    for output, shape in zip(node.output, args[0][marker_id].traced_shapes):
        ctx.set_shape(output, [-1 if size is None else size for size in shape])
        ctx.set_dtype(output, onnx.TensorProto.FLOAT)
    return node


def _splice_markers(proto, markers: dict, opset: int, carried_states: dict) -> None:
    """Replaces each marker node by the native recurrent operator and its masking nodes.

    A stateful layer's state becomes graph inputs `state_N` (the previous call's final
    state; used unless the layer was called with `initial_state=`, as in Keras) and outputs
    `next_state_N`: ONNX Runtime keeps nothing between runs, so the caller carries it."""
    import onnx

    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch.dim_param or "batch"
    nodes = []
    for node in proto.graph.node:
        if node.op_type != MARKER_OP:
            nodes.append(node)
            continue
        marker = markers[next(a.i for a in node.attribute if a.name == "marker")]
        has_mask, state_count = marker.traced
        inputs = list(node.input)
        builder = GraphBuilder(opset, prefix=f"{marker.name}/")
        values = builder.node("Transpose", [inputs[0]], "time_major", perm=[1, 0, 2])
        mask = PaddingMask(builder, inputs[1]) if has_mask else None
        initial_state = inputs[1 + has_mask:1 + has_mask + state_count]
        sizes = state_sizes(marker.description)
        indices = carried_states.get(marker.name, [])
        kept = [state_input_name(index) for index in indices]
        result = builder.recurrent(marker.description, values, mask,
                                   initial_state=initial_state or kept,
                                   return_state=marker.emits_states or bool(kept))
        outputs, states = result if marker.emits_states or kept else (result, [])
        for index, state, units in zip(indices, states if kept else [], sizes):
            name = state_output_name(index)
            builder.nodes.append(onnx.helper.make_node("Identity", [state], [name]))
            proto.graph.input.append(onnx.helper.make_tensor_value_info(
                state_input_name(index), onnx.TensorProto.FLOAT, [batch, units]))
            proto.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, [batch, units]))
        states = states if marker.emits_states else []
        if marker.return_sequences:
            outputs = builder.node("Transpose", [outputs], "batch_major", perm=[1, 0, 2])
        for produced, wanted in zip([outputs] + states, node.output):
            builder.nodes.append(onnx.helper.make_node("Identity", [produced], [wanted]))
        nodes += builder.nodes
        proto.graph.initializer.extend(builder.initializers)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _refuse_unknown_ops(proto) -> None:
    """Ops left with no ONNX form (Python code in the graph, TensorFlow ops tf2onnx does not
    convert) are refused together, each with the node it came from."""
    import onnx

    unknown = [f"{node.op_type} (from {node.name})" for node in proto.graph.node
               if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)]
    if unknown:
        numpy_function = any("PyFunc" in item for item in unknown)
        raise UnsupportedModelError(
            f"These ops have no ONNX form: {', '.join(unknown)}."
            + (" A tf.numpy_function/py_function runs Python, which no ONNX runtime can."
               if numpy_function else ""))


def _name_inputs(proto, names) -> None:
    """The graph's inputs under the exported names (the frozen graph calls them `name:0`)."""
    renames = {}
    for graph_input, name in zip(proto.graph.input, names):
        if graph_input.name != name:
            renames[graph_input.name] = name
            graph_input.name = name
    for node in proto.graph.node:
        for index, value in enumerate(node.input):
            if value in renames:
                node.input[index] = renames[value]


def _name_outputs(proto, outputs) -> None:
    """The graph's outputs under the exported names (in the converter's order), with the
    Keras model's output shapes where the converter could not infer them."""
    import onnx

    for output, (name, shape) in zip(proto.graph.output, outputs):
        if output.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
        if not output.type.tensor_type.HasField("shape"):
            for axis, size in enumerate(shape):
                dim = output.type.tensor_type.shape.dim.add()
                if size is None:
                    dim.dim_param = f"{name}_{axis}"
                else:
                    dim.dim_value = size


def finish_model(graph_proto, opset: int, metadata: dict | None, extra_opsets=()):
    """Wraps a graph into a checked `ModelProto` that onnxruntime 1.31 loads."""
    import onnx

    opset_ids = [onnx.helper.make_opsetid("", opset)] + list(extra_opsets)
    proto = onnx.helper.make_model(
        graph_proto,
        opset_imports=opset_ids,
        producer_name="keras-rnn",
        # onnx 1.23 would write IR version 14, which onnxruntime 1.31 refuses to load: use the
        # lowest IR version that carries this opset.
        ir_version=onnx.helper.find_min_ir_version_for(opset_ids),
    )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


class RecurrentMarker(RecurrentStandIn):
    """A built-in recurrent layer as an opaque op of the traced graph (see `build_onnx`),
    recording which inputs it was called with (mask, initial states)."""

    def __init__(self, original, description, marker_id: int):
        super().__init__(original, description)
        self.marker_id = marker_id
        self.traced = (False, 0)
        self.traced_shapes = []
        self.emits_states = self.return_state

    def call(self, inputs, mask=None, initial_state=None, training=None):
        results = self.marked(inputs, mask, list(initial_state or []), self.return_state)
        return results if self.return_state else results[0]

    def run_with_states(self, inputs, states):
        """One run from `states`, returning `[outputs] + final states` (step models)."""
        return self.marked(self.with_known_shape(inputs), None, list(states), True)

    def marked(self, inputs, mask, states, emit_states: bool) -> list:
        import tensorflow as tf

        self.traced = (mask is not None, len(states))
        self.emits_states = emit_states
        arguments = [inputs] + ([mask] if mask is not None else []) + states
        specs = self._output_specs(inputs.shape[0], inputs.shape[1], with_states=emit_states)
        specs = specs if isinstance(specs, list) else [specs]
        self.traced_shapes = [tuple(spec.shape) for spec in specs]
        results = tf.numpy_function(_never_run, arguments, [tf.float32] * len(specs),
                                    stateful=False,
                                    name=f"{MARKER_PREFIX}{self.marker_id}")
        # EnsureShape (an Identity in ONNX) carries the static shapes through freezing,
        # so the converter knows the ranks of everything downstream
        return [tf.ensure_shape(tensor, spec.shape) for tensor, spec in zip(results, specs)]


def _never_run(*arguments):
    raise RuntimeError("A recurrent marker only stands in the graph traced for conversion.")


class GraphBuilder:
    """Emits ONNX nodes and initializers under fresh names (a recurrent layer with its masking
    and NaN nodes, the step models' and the translator's graphs)."""

    def __init__(self, opset: int, *, prefix: str = ""):
        self.opset = opset
        self.prefix = prefix  # keeps the names apart from the converter's own
        self.nodes = []
        self.initializers = []
        self.counter = 0

    # -- small helpers ---------------------------------------------------------------------
    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{self.prefix}{stem}_{self.counter}"

    def constant(self, stem: str, array) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def node(self, op: str, inputs, stem: str | None = None, outputs: int = 1, **attributes):
        import onnx

        names = [self.fresh(stem or op.lower()) for _ in range(outputs)]
        self.nodes.append(onnx.helper.make_node(op, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def sequence_lengths(self, is_padding: str) -> str:
        """(batch,) int32 non-padding steps per row, from a (batch, time) boolean tensor."""
        import onnx

        valid = self.node("Cast", [self.node("Not", [is_padding])], to=onnx.TensorProto.INT32)
        return self.node("ReduceSum", [valid, self.constant("axes", np.array([1], np.int64))],
                         "sequence_lens", keepdims=0)

    def head(self, layer, values: str) -> str:
        """A Dense or Activation layer."""
        if isinstance(layer, Dense):
            values = self.node("MatMul", [values, self.constant("kernel", layer.kernel)])
            values = self.node("Add", [values, self.constant("bias", layer.bias)], "dense")
        return self.activation(layer.activation, values)

    def activation(self, name: str, values: str) -> str:
        if name == "linear":
            return values
        if name == "softmax":
            return self.node("Softmax", [values], "probabilities", axis=-1)
        return self.node(_HEAD_OPS[name], [values])

    # -- recurrent layers -------------------------------------------------------------------
    def recurrent(self, layer, values: str, mask, *, initial_state=(), return_state=False,
                  nan_checks=True):
        """Emits one RNN/LSTM/GRU node for a layer (both directions for Bidirectional).

        Args:
            layer: a `Recurrent` or `Bidirectional` description.
            values: time-major (time, batch, features).
            mask: a `PaddingMask` or None.
            initial_state: (batch, units) tensors in Keras's order (h then c for LSTM; the
                forward direction's, then the backward one's); empty for zeros.
            return_state: also return the final states, in that order.
            nan_checks: carry NaN on as Keras does (see below); off for inputs that cannot
                hold NaN (embedded ids).

        Returns:
            Time-major outputs, or (batch, units) when the layer returns only its last step;
            with `return_state`, `(outputs, states)`.
        """
        if isinstance(layer, Stacked):  # each cell over the whole sequence, in turn
            if initial_state or return_state:
                raise UnsupportedModelError(
                    f"Layer {layer.name!r} (RNN over StackedRNNCells) is called with "
                    "initial_state, which its native form does not take yet.")
            for inner in layer.layers:
                values = self.recurrent(inner, values, mask, nan_checks=nan_checks)
            return values
        directions = [layer.forward, layer.backward] if isinstance(layer, Bidirectional) else [layer]
        first = directions[0]
        kind = cell(first.cell)
        if isinstance(layer, Bidirectional):
            direction_name = "bidirectional"
        else:
            direction_name = "reverse" if layer.go_backwards else "forward"
        # ONNX Runtime's recurrent kernels clip their activations' inputs, which turns NaN into
        # finite numbers; Keras carries a NaN step's NaN on to every later step. Float inputs
        # can hold NaN, so the steps where Keras has NaN are set to NaN after the operator.
        nan_steps = self.nan_steps(values, mask) if nan_checks else None
        if mask is not None:
            values = mask.compact(values)
        inputs, attributes = self.operator_inputs(layer.name, directions, values, direction_name)
        inputs.append(mask.operator_lengths if mask is not None else "")
        per_state = kind.state_count()
        if initial_state:
            for which in range(per_state):  # initial_h, then initial_c: (directions, batch, units)
                parts = [self.node("Unsqueeze", [initial_state[d * per_state + which],
                                                 self.constant("axes", np.array([0], np.int64))])
                         for d in range(len(directions))]
                inputs.append(parts[0] if len(parts) == 1 else
                              self.node("Concat", parts, "initial_state", axis=0))
        results = self.node(kind.onnx_operator, inputs, kind.onnx_operator,
                            outputs=1 + per_state, **attributes)
        all_steps, last_step = results[:2]
        any_nan = None  # (batch,): the row holds a NaN step; only where used (every node costs)
        if nan_steps is not None and (return_state or (mask is None and not layer.return_sequences)):
            any_nan = self.node("Greater", [self.reduce_max(nan_steps, 0, keepdims=0),
                                            self.constant("zero", np.array(0, np.float32))])
        # all_steps: (time, directions, batch, units); last_step: (directions, batch, units)
        if mask is None and not layer.return_sequences:
            # Unmasked, the last output in processing order is the operator's Y_h.
            per_direction = self.split_directions(last_step, len(directions), axis=0)
            if any_nan is not None:  # the last step has seen every step, in both directions
                per_direction = [self.where_nan(any_nan, outputs, axis=1)
                                 for outputs in per_direction]
        else:
            per_direction = self.split_directions(all_steps, len(directions), axis=1)
            if mask is not None:
                # back to each step's own position, in input order (time, batch, units)
                per_direction = [mask.restore(outputs, backward=direction.go_backwards,
                                              zero_output=direction.zero_output_for_mask)
                                 for outputs, direction in zip(per_direction, directions)]
            if nan_steps is not None:
                per_direction = [self.poison(outputs, nan_steps, mask, direction)
                                 for outputs, direction in zip(per_direction, directions)]
            if not layer.return_sequences:
                # Keras returns the output of the last step processed: the last one in time
                # going forwards, the first one going backwards.
                per_direction = [self.time_slice(outputs, -1 if not direction.go_backwards else 0)
                                 for outputs, direction in zip(per_direction, directions)]
            elif isinstance(layer, Recurrent) and layer.go_backwards:
                # Keras returns a backwards layer's outputs in processing order
                per_direction = [self.reverse_time(per_direction[0])]
        if len(per_direction) == 1:
            outputs = per_direction[0]
        else:
            outputs = self.merge(layer.merge_mode, *per_direction)
        if not return_state:
            return outputs
        finals = [self.split_directions(final, len(directions), axis=0) for final in results[1:]]
        states = []
        for d in range(len(directions)):
            for which in range(per_state):
                state = finals[which][d]
                if initial_state and mask is not None:
                    # a row with no unmasked step keeps its initial state, as in Keras
                    empty = self.node("Unsqueeze", [self.node("Equal", [
                        mask.lengths, self.constant("zero", np.array(0, np.int64))]),
                        self.constant("axes", np.array([1], np.int64))])
                    state = self.node("Where", [empty, initial_state[d * per_state + which], state])
                if any_nan is not None:
                    state = self.where_nan(any_nan, state, axis=1)
                states.append(state)
        return outputs, states

    def reduce_max(self, values: str, axis: int, *, keepdims: int) -> str:
        if self.opset >= 18:
            return self.node("ReduceMax", [values, self.constant("axes", np.array([axis], np.int64))],
                             keepdims=keepdims)
        return self.node("ReduceMax", [values], axes=[axis], keepdims=keepdims)

    def nan_steps(self, values: str, mask) -> str:
        """(time, batch) float: 1 where an unmasked step's input holds a NaN."""
        import onnx

        has_nan = self.node("Cast", [self.node("IsNaN", [values])], to=onnx.TensorProto.FLOAT)
        steps = self.reduce_max(has_nan, 2, keepdims=0)
        if mask is not None:  # a masked step never reaches the state
            steps = self.node("Mul", [steps, self.node("Cast", [mask.valid],
                                                       to=onnx.TensorProto.FLOAT)])
        return steps

    def where_nan(self, condition: str, values: str, *, axis: int) -> str:
        condition = self.node("Unsqueeze", [condition, self.constant("axes", np.array([axis], np.int64))])
        return self.node("Where", [condition, self.constant("nan", np.array(np.nan, np.float32)),
                                   values], "nan_carried")

    def poison(self, outputs: str, nan_steps: str, mask, direction) -> str:
        """NaN at every step Keras's time loop reaches after a NaN step, in processing order."""
        seen = self.node("CumSum", [nan_steps, self.constant("axis", np.array(0, np.int64))],
                         reverse=int(direction.go_backwards))
        poisoned = self.node("Greater", [seen, self.constant("zero", np.array(0, np.float32))])
        if mask is not None and direction.zero_output_for_mask:
            poisoned = self.node("And", [poisoned, mask.valid])
        return self.where_nan(poisoned, outputs, axis=2)

    def split_directions(self, values: str, count: int, *, axis: int) -> list:
        """The operator's outputs per direction, the direction axis removed."""
        axes = self.constant("axes", np.array([axis], np.int64))
        if count == 1:
            return [self.node("Squeeze", [values, axes], "direction")]
        parts = self.node("Split", [values, self.constant("split", np.array([1] * count, np.int64))],
                          outputs=count, axis=axis)
        return [self.node("Squeeze", [part, axes], "direction") for part in parts]

    def time_slice(self, values: str, index: int) -> str:
        """(time, batch, units) -> (batch, units) at one time index."""
        return self.node("Gather", [values, self.constant("index", np.array(index, np.int64))],
                         "last_output", axis=0)

    def reverse_time(self, values: str) -> str:
        return self.node("Slice", [values, self.constant("starts", np.array([-1], np.int64)),
                                   self.constant("ends", np.array([np.iinfo(np.int64).min], np.int64)),
                                   self.constant("axes", np.array([0], np.int64)),
                                   self.constant("steps", np.array([-1], np.int64))], "reversed")

    def merge(self, mode: str, forward: str, backward: str) -> str:
        """Merges the two directions as `keras.layers.Bidirectional(merge_mode=...)` does."""
        if mode == "concat":
            return self.node("Concat", [forward, backward], "concat", axis=-1)
        if mode == "mul":
            return self.node("Mul", [forward, backward], "product")
        total = self.node("Add", [forward, backward], "sum")
        if mode == "sum":
            return total
        return self.node("Mul", [total, self.constant("half", np.array(0.5, np.float32))], "average")

    def operator_inputs(self, name: str, directions, values: str, direction_name: str):
        """The inputs X, W, R, B and the attributes of one RNN/LSTM/GRU node."""
        first = directions[0]  # every activation keras_rnn.structure accepts has an entry
        W, R, B = zip(*(_onnx_weights(direction) for direction in directions))
        kind = cell(first.cell)
        # Keras activations in the operator's slots (f, g, h per direction)
        names = [getattr(direction, attribute) for direction in directions
                 for attribute in kind.onnx_activations]
        activations = [_ONNX_ACTIVATIONS[name][0] for name in names]
        # activation_alpha/beta are consumed in order by the activations that take them
        scales = [_ONNX_ACTIVATIONS[name][1] for name in names if _ONNX_ACTIVATIONS[name][1]]
        attributes = dict(hidden_size=first.units, direction=direction_name,
                          activations=activations)
        if scales:
            attributes["activation_alpha"] = [alpha for alpha, _ in scales]
            attributes["activation_beta"] = [beta for _, beta in scales]
        attributes.update(kind.onnx_attributes(first))
        inputs = [values, self.constant("W", np.stack(W)), self.constant("R", np.stack(R)),
                  self.constant("B", np.stack(B))]
        return inputs, attributes


def _onnx_weights(layer: Recurrent):
    """Keras (input, gates*units) kernels -> ONNX W (gates*units, input), R, B = [Wb, Rb]."""
    kind = cell(layer.cell)
    # Keras's gate order to the operator's (LSTM: i, f, c, o -> i, o, f, c)
    kernel, recurrent, bias = (kind.keras_to_onnx_gates(matrix, layer.units)
                               for matrix in (layer.kernel, layer.recurrent_kernel, layer.bias))
    if bias.ndim == 2:  # GRU reset_after: an input and a recurrent bias
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros_like(bias)
    return (
        kernel.T.astype(np.float32),
        recurrent.T.astype(np.float32),
        np.concatenate([input_bias, recurrent_bias]).astype(np.float32),
    )


class PaddingMask:
    """A (batch, time) padding mask as the native recurrent operators need it.

    The ONNX operators only skip steps at the end of a row (`sequence_lens`); Keras skips any
    masked step, carrying the state over it and repeating the previous output there. So each
    masked layer (1) gathers every row's unmasked steps to its front, in order (`compact`),
    (2) runs the operator with `sequence_lens` = the number of unmasked steps, and (3) gathers
    each output back to its own step (`restore`): an unmasked step t takes the operator's output
    for it, a masked step the output of the nearest unmasked step before it in processing order
    (after it, for a backwards direction), or zeros when there is none or the layer has
    `zero_output_for_mask`. That is Keras's rule for masks at the start, the end or the middle
    of a row. The index tensors are built once per mask and shared by the layers it reaches.
    """

    def __init__(self, graph: GraphBuilder, valid: str):
        import onnx

        self.graph = graph
        int64 = onnx.TensorProto.INT64
        self.valid = graph.node("Transpose", [valid], "valid", perm=[1, 0])  # (time, batch) bool
        steps = graph.node("Cast", [self.valid], to=int64)
        # (time, batch): unmasked steps up to and including t
        counted = graph.node("CumSum", [steps, graph.constant("axis", np.array(0, np.int64))],
                             "counted")
        self.lengths = graph.node("Gather", [counted, graph.constant("last", np.array(-1, np.int64))],
                                  "lengths", axis=0)  # (batch,)
        self.operator_lengths = graph.node("Cast", [self.lengths], "sequence_lens",
                                           to=onnx.TensorProto.INT32)
        time = graph.node("Gather", [graph.node("Shape", [self.valid]),
                                     graph.constant("zero", np.array(0, np.int64))], "time")
        one = graph.constant("one", np.array(1, np.int64))
        # forward: step t's output is the operator's output number counted[t] - 1
        forward = graph.node("Sub", [counted, one])
        self.forward = (graph.node("Max", [forward, graph.constant("zero", np.array(0, np.int64))]),
                        graph.node("Greater", [counted, graph.constant("zero", np.array(0, np.int64))]))
        # backwards: the operator's output number counted[t] - valid[t] (the next unmasked step)
        backward = graph.node("Sub", [counted, steps])
        self.backward = (graph.node("Min", [backward, graph.node("Sub", [time, one])]),
                         graph.node("Less", [backward, self.lengths]))
        # compaction order: unmasked steps first, in time order (key valid * (time - t))
        position = graph.node("Range", [graph.constant("zero", np.array(0, np.int64)), time, one])
        remaining = graph.node("Unsqueeze", [graph.node("Sub", [time, position]),
                                             graph.constant("axes", np.array([1], np.int64))])
        key = graph.node("Cast", [graph.node("Mul", [steps, remaining])], "order_key",
                         to=onnx.TensorProto.FLOAT)
        count = graph.node("Reshape", [time, graph.constant("shape", np.array([1], np.int64))])
        _, self.order = graph.node("TopK", [key, count], "order", outputs=2, axis=0, largest=1,
                                   sorted=1)

    def _gather_steps(self, values: str, index: str) -> str:
        """values (time, batch, units) gathered along time by a (time, batch) index."""
        graph = self.graph
        expanded = graph.node("Expand", [
            graph.node("Unsqueeze", [index, graph.constant("axes", np.array([2], np.int64))]),
            graph.node("Shape", [values])])
        return graph.node("GatherElements", [values, expanded], "gathered", axis=0)

    def compact(self, values: str) -> str:
        """Each row's unmasked steps moved to its front, in order."""
        return self._gather_steps(values, self.order)

    def restore(self, outputs: str, *, backward: bool, zero_output: bool) -> str:
        """The operator's outputs (time, batch, units) put back at the steps Keras gives them."""
        graph = self.graph
        index, exists = self.backward if backward else self.forward
        keep = self.valid if zero_output else exists
        keep = graph.node("Unsqueeze", [keep, graph.constant("axes", np.array([2], np.int64))])
        return graph.node("Where", [keep, self._gather_steps(outputs, index),
                                    graph.constant("zero", np.array(0, np.float32))], "masked")
