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

# Keras activation -> the ONNX recurrent operators' activation, with its (alpha, beta) when it
# takes them. Keras 3's hard_sigmoid is clip(x / 6 + 0.5, 0, 1); linear is Affine(1, 0).
ONNX_ACTIVATIONS = {"tanh": ("Tanh", None), "sigmoid": ("Sigmoid", None),
                     "relu": ("Relu", None), "hard_sigmoid": ("HardSigmoid", (1 / 6, 0.5)),
                     "linear": ("Affine", (1.0, 0.0))}


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
        W, R, B = zip(*(onnx_weights(direction) for direction in directions))
        kind = cell(first.cell)
        # Keras activations in the operator's slots (f, g, h per direction)
        names = [getattr(direction, attribute) for direction in directions
                 for attribute in kind.onnx_activations]
        activations = [ONNX_ACTIVATIONS[name][0] for name in names]
        # activation_alpha/beta are consumed in order by the activations that take them
        scales = [ONNX_ACTIVATIONS[name][1] for name in names if ONNX_ACTIVATIONS[name][1]]
        attributes = dict(hidden_size=first.units, direction=direction_name,
                          activations=activations)
        if scales:
            attributes["activation_alpha"] = [alpha for alpha, _ in scales]
            attributes["activation_beta"] = [beta for _, beta in scales]
        attributes.update(kind.onnx_attributes(first))
        inputs = [values, self.constant("W", np.stack(W)), self.constant("R", np.stack(R)),
                  self.constant("B", np.stack(B))]
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
