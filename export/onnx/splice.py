"""The recurrent markers: each built-in recurrent layer as an opaque op through tf2onnx, then
spliced into its native operator.

`RecurrentMarker` stands in the traced graph as a `tf.numpy_function` named after its number;
tf2onnx hands each such node to `mark_recurrent` (its `custom_op_handlers` hook), which keeps
it opaque; `splice_markers` then replaces it by the operator and its masking nodes
(`export.onnx.operators`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from export.model.rebuild import RecurrentStandIn, given_states
from export.model.state import state_sizes
from export.onnx.masks import PaddingMask
from export.onnx.operators import GraphBuilder
from export.runtime import (
    state_input_name,
    state_output_name,
)
from keras_rnn.structure import UnsupportedModelError

MARKER_DOMAIN = "keras_rnn.marker"  # the opaque recurrent nodes between tf2onnx and the splice
MARKER_OP = "Recurrent"
MARKER_PREFIX = "keras_rnn_recurrent_"


def marker_maker(markers: dict, cls=None):
    """The stand-in maker for `clone_with`: each built-in recurrent layer becomes a numbered
    `cls` (default `RecurrentMarker`), registered in `markers` by its number."""

    def make(original, description):
        marker = (cls or RecurrentMarker)(original, description, len(markers))
        markers[marker.marker_id] = marker
        return marker

    return make


def mark_recurrent(ctx, node, name, args):
    """tf2onnx's handler for the markers' PyFunc ops: an opaque node that keeps its inputs and
    outputs and names the recurrent layer it stands for."""
    import onnx

    match = re.search(rf"{MARKER_PREFIX}(\d+)c(\d+)", node.name)
    if match is None:  # the user's own tf.numpy_function: refused by _refuse_unknown_ops
        node.type, node.domain = "PyFunc", ""  # (tf2onnx set the marker type already)
        return node
    node.type, node.domain = MARKER_OP, MARKER_DOMAIN
    marker_id, call = int(match.group(1)), int(match.group(2))
    node.set_attr("marker", marker_id)
    node.set_attr("call", call)
    # the converter cannot infer an opaque op's outputs; later ops (Concat on axis -1, the
    # reshapes of TimeDistributed) need their rank and known sizes
    for output, shape in zip(node.output, args[0][marker_id].calls[call].shapes):
        ctx.set_shape(output, [-1 if size is None else size for size in shape])
        ctx.set_dtype(output, onnx.TensorProto.FLOAT)
    return node


def splice_markers(proto, markers: dict, opset: int, carried_states: dict) -> None:
    """Replaces each marker node by the native recurrent operator and its masking nodes.

    A stateful layer's state becomes graph inputs `state_N` (the previous call's final
    state; used unless the layer was called with `initial_state=`, as in Keras) and outputs
    `next_state_N`: ONNX Runtime keeps nothing between runs, so the caller carries it."""
    import onnx

    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch.dim_param or "batch"
    nodes, carried = [], set()
    for node in proto.graph.node:
        if node.op_type != MARKER_OP:
            nodes.append(node)
            continue
        attributes = {a.name: a.i for a in node.attribute}
        marker = markers[attributes["marker"]]
        call = marker.calls[attributes["call"]]
        has_mask, state_count = call.has_mask, call.state_count
        inputs = list(node.input)
        # (a layer called several times, as a shared encoder is, gets one operator per call)
        builder = GraphBuilder(opset, prefix=f"{marker.name}/" + (
            f"call_{attributes['call']}/" if attributes["call"] else ""))
        values = builder.node("Transpose", [inputs[0]], "time_major", perm=[1, 0, 2])
        mask = PaddingMask(builder, inputs[1]) if has_mask else None
        initial_state = inputs[1 + has_mask:1 + has_mask + state_count]
        sizes = state_sizes(marker.description)
        indices = carried_states.get(marker.name, [])
        if indices and marker.name in carried:
            raise UnsupportedModelError(
                f"The stateful layer {marker.name!r} is called more than once: its state, "
                "carried as the file's inputs and outputs, would be one per call. Export to "
                ".tflite, which keeps the layer's state as Keras does.")
        carried.add(marker.name)
        kept = [state_input_name(index) for index in indices]
        result = builder.recurrent(marker.description, values, mask,
                                   initial_state=initial_state or kept,
                                   return_state=call.emits_states or bool(kept))
        outputs, states = result if call.emits_states or kept else (result, [])
        outputs = outputs if isinstance(outputs, list) else [outputs]  # (merge_mode=None: 2)
        for index, state, units in zip(indices, states if kept else [], sizes):
            name = state_output_name(index)
            builder.nodes.append(onnx.helper.make_node("Identity", [state], [name]))
            proto.graph.input.append(onnx.helper.make_tensor_value_info(
                state_input_name(index), onnx.TensorProto.FLOAT, [batch, units]))
            proto.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, [batch, units]))
        states = states if call.emits_states else []
        if marker.return_sequences:
            outputs = [builder.node("Transpose", [output], "batch_major", perm=[1, 0, 2])
                       for output in outputs]
        for produced, wanted in zip(outputs + states, node.output):
            builder.nodes.append(onnx.helper.make_node("Identity", [produced], [wanted]))
        nodes += builder.nodes
        proto.graph.initializer.extend(builder.initializers)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


class MarkedCall(NamedTuple):
    """What one call of a recurrent layer was traced with: its node is spliced from this."""
    has_mask: bool
    state_count: int  # initial states given
    emits_states: bool
    shapes: list  # the outputs' static shapes


class RecurrentMarker(RecurrentStandIn):
    """A built-in recurrent layer as an opaque op of the traced graph (see `build_onnx`),
    recording each call's inputs (mask, initial states) in `calls`: a layer may be called
    several times (shared layers) with different ones."""

    def __init__(self, original, description, marker_id: int):
        super().__init__(original, description)
        self.marker_id = marker_id
        self.calls = []

    def call(self, inputs, mask=None, initial_state=None, training=None):
        return self.own_outputs(self.marked(inputs, mask, given_states(initial_state) or [],
                                            self.return_state))

    def run_with_states(self, inputs, states):
        """One run from `states`, returning `[outputs] + final states` (step models)."""
        return self.marked(self.with_known_shape(inputs), None, list(states), True)

    def marked(self, inputs, mask, states, emit_states: bool) -> list:
        import tensorflow as tf

        arguments = [inputs] + ([mask] if mask is not None else []) + states
        specs = self._output_specs(inputs.shape[0], inputs.shape[1], with_states=emit_states)
        specs = specs if isinstance(specs, list) else [specs]
        self.calls.append(MarkedCall(mask is not None, len(states), emit_states,
                                     [tuple(spec.shape) for spec in specs]))
        results = tf.numpy_function(_never_run, arguments, [tf.float32] * len(specs),
                                    stateful=False,
                                    name=f"{MARKER_PREFIX}{self.marker_id}c{len(self.calls) - 1}")
        # EnsureShape (an Identity in ONNX) carries the static shapes through freezing,
        # so the converter knows the ranks of everything downstream
        return [tf.ensure_shape(tensor, spec.shape) for tensor, spec in zip(results, specs)]


def _never_run(*arguments):
    raise RuntimeError("A recurrent marker only stands in the graph traced for conversion.")
