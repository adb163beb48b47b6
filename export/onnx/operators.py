"""ONNX nodes for a recurrent layer: the native `RNN`/`LSTM`/`GRU` operator with Keras's weights,
activations, masks (`export.onnx.masks`), NaN propagation, directions and merge modes.
"""

from __future__ import annotations

import numpy as np

from keras_rnn.cells import cell
from keras_rnn.structure import (
    Bidirectional,
    Recurrent,
    Stacked,
    UnsupportedModelError,
)

# Keras activation -> the ONNX recurrent operators' activation, with its (alpha[, beta]) when it
# takes them. Keras 3's hard_sigmoid is clip(x / 6 + 0.5, 0, 1); linear is Affine(1, 0); elu
# as a layer's activation string has alpha 1.
ONNX_ACTIVATIONS = {"tanh": ("Tanh", None), "sigmoid": ("Sigmoid", None),
                     "relu": ("Relu", None), "hard_sigmoid": ("HardSigmoid", (1 / 6, 0.5)),
                     "linear": ("Affine", (1.0, 0.0)), "softsign": ("Softsign", None),
                     "softplus": ("Softplus", None), "elu": ("Elu", (1.0,))}


class GraphBuilder:
    """Emits ONNX nodes and initializers under fresh names: a recurrent layer's operator with
    its masking and NaN nodes, spliced in place of its marker."""

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

    # -- recurrent layers -------------------------------------------------------------------
    def recurrent(self, layer, values: str, mask, *, initial_state=(), return_state=False,
                  nan_checks=True):
        """Emits a layer's RNN/LSTM/GRU nodes: one forward operator per direction.

        The graph means the same in every ONNX runtime: nothing depends on how a runtime reads
        `sequence_lens` (only a speed hint here) or runs `direction="reverse"` (never used):
        runtimes differ there (the reference evaluator ignores `sequence_lens`, OpenVINO too
        with dynamic shapes, tract runs "reverse" forwards). A backwards direction runs
        forwards over the steps in reverse order (its unmasked steps, with a mask:
        `PaddingMask.compact`); a masked layer's final state is its output at each row's last
        unmasked step, and an LSTM's final cell state is recomputed from the gates
        (`_cell_states`).

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
        # ONNX Runtime's recurrent kernels clip their activations' inputs, which turns NaN into
        # finite numbers; Keras carries a NaN step's NaN on to every later step. Float inputs
        # can hold NaN, so the steps where Keras has NaN are set to NaN after the operator.
        nan_steps = self.nan_steps(values, mask) if nan_checks else None
        any_nan = None  # (batch,): the row holds a NaN step; only where used (every node costs)
        if nan_steps is not None and (return_state or (mask is None and not layer.return_sequences)):
            any_nan = self.node("Greater", [self.reduce_max(nan_steps, 0, keepdims=0),
                                            self.constant("zero", np.array(0, np.float32))])
        last_only = mask is None and not layer.return_sequences
        per_direction, states, offset = [], [], 0
        for direction in directions:
            # (a Bidirectional's backward_layer may be another cell: each direction its own)
            kind = cell(direction.cell)
            per_state = kind.state_count()
            given = list(initial_state[offset:offset + per_state])
            offset += per_state
            backward = direction.go_backwards
            if mask is not None:
                sequence = mask.compact(values, backward=backward)
            else:
                sequence = self.reverse_time(values) if backward else values
            inputs, attributes = self.operator_inputs(direction, sequence)
            # sequence_lens, with a mask: a hint that lets ONNX Runtime skip each row's padding
            # (1.1-1.25x faster at batch 1); a runtime that ignores it computes outputs past
            # each row's length, which nothing reads, so the answer is the same either way
            inputs.append(mask.lengths if mask is not None else "")  # int32, as required
            inputs += [self.node("Unsqueeze", [state, self.axes(0)]) for state in given]
            results = self.node(kind.onnx_operator, inputs, kind.onnx_operator,
                                outputs=1 + per_state, **attributes)
            if last_only:  # unmasked: the last output in processing order is the operator's Y_h
                outputs = self.node("Squeeze", [results[1], self.axes(0)], "last_output")
                if any_nan is not None:  # the last step has seen every step
                    outputs = self.where_nan(any_nan, outputs, axis=1)
            else:
                # (time, batch, units), in processing order
                steps = self.node("Squeeze", [results[0], self.axes(1)], "direction")
                if mask is not None:  # back to each step's own position, in input order
                    outputs = mask.restore(steps, backward=backward,
                                           zero_output=direction.zero_output_for_mask)
                else:
                    outputs = self.reverse_time(steps) if backward else steps
                if nan_steps is not None:
                    outputs = self.poison(outputs, nan_steps, mask, direction)
                if not layer.return_sequences:
                    # Keras returns the output of the last step processed: the last one in
                    # time going forwards, the first one going backwards.
                    outputs = self.time_slice(outputs, 0 if backward else -1)
            per_direction.append(outputs)
            if not return_state:
                continue
            if mask is None:
                finals = [self.node("Squeeze", [final, self.axes(0)], "state")
                          for final in results[1:]]
            else:
                finals = [mask.last_step(steps, given[0] if given else None)]
                if per_state == 2:
                    cells = self._cell_states(direction, sequence, steps, given)
                    finals.append(mask.last_step(cells, given[1] if given else None))
            if any_nan is not None:
                finals = [self.where_nan(any_nan, state, axis=1) for state in finals]
            states += finals
        if isinstance(layer, Recurrent) and layer.go_backwards and layer.return_sequences:
            # Keras returns a backwards layer's outputs in processing order
            per_direction = [self.reverse_time(per_direction[0])]
        outputs = (per_direction[0] if len(per_direction) == 1
                   else self.merge(layer.merge_mode, *per_direction))
        return (outputs, states) if return_state else outputs

    def _cell_states(self, layer, sequence: str, steps: str, given) -> str:
        """An LSTM's cell state c after every step (time, batch, units), recomputed from its
        outputs: the gates of step t read the input at t and the output h at t - 1, so they
        come from two matmuls over all steps, and c_t = f_t * c_(t-1) + i_t * g_t is an
        element-wise `Scan`. Only the operator's Y_c holds c, and only at the last step it ran,
        which a masked row needs at its last unmasked step (`sequence_lens` did that, in ONNX
        Runtime alone)."""
        import onnx

        W, R, B = onnx_weights(layer)  # ONNX gate order i, o, f, c
        units = layer.units
        if given:  # (h, c)
            first_h, first_c = self.node("Unsqueeze", [given[0], self.axes(0)]), given[1]
        else:
            first_h = self.node("ConstantOfShape", [self.node("Shape", [
                self.time_range(steps, 0, 1)])], "zeros", value=onnx.helper.make_tensor(
                    "zero", onnx.TensorProto.FLOAT, [1], [0.0]))  # (1, batch, units)
            first_c = self.node("Squeeze", [first_h, self.axes(0)], "zero_c")
        earlier = self.time_range(steps, 0, -1)
        previous = self.node("Concat", [first_h, earlier], "previous_h", axis=0)
        gates = self.node("Add", [
            self.node("MatMul", [sequence, self.constant("W_t", np.ascontiguousarray(W.T))]),
            self.node("MatMul", [previous, self.constant("R_t", np.ascontiguousarray(R.T))])])
        gates = self.node("Add", [gates, self.constant("bias", B[:4 * units] + B[4 * units:])],
                          "gates")
        i, _, f, g = self.node("Split", [gates, self.constant(
            "split", np.array([units] * 4, np.int64))], "gate", outputs=4, axis=-1)
        f = self.gate_activation(layer.recurrent_activation, f)
        update = self.node("Mul", [self.gate_activation(layer.recurrent_activation, i),
                                   self.gate_activation(layer.activation, g)], "update")
        name = self.fresh("cell_step")
        body = onnx.helper.make_graph(
            [onnx.helper.make_node("Mul", [f"{name}/f", f"{name}/c"], [f"{name}/kept"]),
             onnx.helper.make_node("Add", [f"{name}/kept", f"{name}/update"], [f"{name}/next"]),
             onnx.helper.make_node("Identity", [f"{name}/next"], [f"{name}/out"])],
            name,
            [onnx.helper.make_tensor_value_info(f"{name}/c", onnx.TensorProto.FLOAT, None),
             onnx.helper.make_tensor_value_info(f"{name}/f", onnx.TensorProto.FLOAT, None),
             onnx.helper.make_tensor_value_info(f"{name}/update", onnx.TensorProto.FLOAT, None)],
            [onnx.helper.make_tensor_value_info(f"{name}/next", onnx.TensorProto.FLOAT, None),
             onnx.helper.make_tensor_value_info(f"{name}/out", onnx.TensorProto.FLOAT, None)])
        _, cells = self.node("Scan", [first_c, f, update], "cell_states", outputs=2, body=body,
                             num_scan_inputs=2)
        return cells

    def time_range(self, values: str, start: int, end: int) -> str:
        """values[start:end] along the first (time) axis."""
        return self.node("Slice", [values, self.constant("starts", np.array([start], np.int64)),
                                   self.constant("ends", np.array([end], np.int64)), self.axes(0)])

    def axes(self, *axes: int) -> str:
        """An int64 axes constant (Squeeze, Unsqueeze, Slice inputs)."""
        return self.constant("axes", np.array(axes, np.int64))

    def gate_activation(self, name: str, values: str) -> str:
        """A Keras activation of a recurrent cell as an ONNX node (see ONNX_ACTIVATIONS)."""
        op, scales = ONNX_ACTIVATIONS[name]
        if op == "Affine":
            return values
        return self.node(op, [values], **dict(zip(("alpha", "beta"), scales or ())))

    def reduce_max(self, values: str, axis: int, *, keepdims: int) -> str:
        if self.opset >= 18:
            return self.node("ReduceMax", [values, self.axes(axis)],
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
        condition = self.node("Unsqueeze", [condition, self.axes(axis)])
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

    def time_slice(self, values: str, index: int) -> str:
        """(time, batch, units) -> (batch, units) at one time index."""
        return self.node("Gather", [values, self.constant("index", np.array(index, np.int64))],
                         "last_output", axis=0)

    def reverse_time(self, values: str) -> str:
        return self.node("Slice", [values, self.constant("starts", np.array([-1], np.int64)),
                                   self.constant("ends", np.array([np.iinfo(np.int64).min], np.int64)),
                                   self.axes(0),
                                   self.constant("steps", np.array([-1], np.int64))], "reversed")

    def merge(self, mode: str | None, forward: str, backward: str):
        """Merges the two directions as `keras.layers.Bidirectional(merge_mode=...)` does;
        `None` keeps both: `[forward, backward]`."""
        if mode is None:
            return [forward, backward]
        if mode == "concat":
            return self.node("Concat", [forward, backward], "concat", axis=-1)
        if mode == "mul":
            return self.node("Mul", [forward, backward], "product")
        total = self.node("Add", [forward, backward], "sum")
        if mode == "sum":
            return total
        return self.node("Mul", [total, self.constant("half", np.array(0.5, np.float32))], "average")

    def operator_inputs(self, layer, values: str):
        """The inputs X, W, R, B and the attributes of one forward RNN/LSTM/GRU node for a
        `Recurrent` description (every activation keras_rnn.structure accepts has an entry)."""
        W, R, B = onnx_weights(layer)
        kind = cell(layer.cell)
        # Keras activations in the operator's slots (f, g, h)
        names = [getattr(layer, attribute) for attribute in kind.onnx_activations]
        activations = [ONNX_ACTIVATIONS[name][0] for name in names]
        # activation_alpha/beta are consumed in order by the activations that take them (Elu
        # an alpha alone)
        scales = [ONNX_ACTIVATIONS[name][1] or () for name in names]
        attributes = dict(hidden_size=layer.units, direction="forward", activations=activations)
        if any(scales):
            attributes["activation_alpha"] = [scale[0] for scale in scales if scale]
        if any(len(scale) > 1 for scale in scales):
            attributes["activation_beta"] = [scale[1] for scale in scales if len(scale) > 1]
        attributes.update(kind.onnx_attributes(layer))
        # (one direction: the operator's leading num_directions axis is 1)
        inputs = [values, self.constant("W", W[None]), self.constant("R", R[None]),
                  self.constant("B", B[None])]
        return inputs, attributes


def onnx_weights(layer: Recurrent):
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
