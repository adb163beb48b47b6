"""Keras's masks with the native recurrent operators, for any padding pattern, in any runtime.

A `mask_zero` Embedding or a `Masking` layer gives a (batch, time) mask, and each recurrent
layer reproduces Keras's masking exactly for any pattern (padding at the start, the end, or
steps masked in the middle of a row): each direction's unmasked steps of each row are gathered
to its front in processing order, the native operator runs over every step (the padding
after them cannot change the outputs before it), and every output is gathered back to its
step, a masked step repeating the output of the step before it in processing order (or zeros,
with `zero_output_for_mask`), as Keras's time loop does; the final state is the output at each
row's last unmasked step. No graph reads the operators' `sequence_lens` input: the ONNX
reference evaluator ignores it, OpenVINO ignores it for dynamic shapes and tract refuses a
computed one, so files that used it gave other numbers there than in ONNX Runtime.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from export.onnx.operators import GraphBuilder


class PaddingMask:
    """A (batch, time) padding mask as the native recurrent operators need it.

    Keras skips any masked step, carrying the state over it and repeating the previous output
    there. So each masked direction (1) gathers every row's unmasked steps to its front, in its
    processing order (`compact`), (2) runs the operator over all steps, and (3) gathers each
    output back to its own step (`restore`): an unmasked step t takes the operator's output for
    it, a masked step the output of the nearest unmasked step before it in processing order,
    or zeros when there is none or the layer has `zero_output_for_mask`. That is Keras's rule
    for masks at the start, the end or the middle of a row. `last_step` gives each row's
    output at its last unmasked step: the layer's final state. The index tensors are built
    once per mask (and direction) and shared by the layers it reaches.
    """

    def __init__(self, graph: GraphBuilder, valid: str):
        import onnx

        self.graph = graph
        # the counts are int32: tract evaluates an int64 CumSum as a symbolic dimension and fails
        self.valid = graph.node("Transpose", [valid], "valid", perm=[1, 0])  # (time, batch) bool
        self.steps = graph.node("Cast", [self.valid], to=onnx.TensorProto.INT32)
        # (time, batch): unmasked steps up to and including t
        self.counted = graph.node("CumSum", [self.steps, self._int(0)], "counted")
        self.lengths = graph.node("Gather", [self.counted, self._int(-1)], "lengths",
                                  axis=0)  # (batch,)
        self.time64 = graph.node("Gather", [graph.node("Shape", [self.valid]), graph.constant(
            "zero", np.array(0, np.int64))], "time")
        self.time = graph.node("Cast", [self.time64], to=onnx.TensorProto.INT32)

    def _int(self, value) -> str:
        return self.graph.constant("int", np.array(value, np.int32))

    @cached_property
    def forward(self):
        """(index, exists): step t's output is the operator's output number counted[t] - 1."""
        graph = self.graph
        index = graph.node("Sub", [self.counted, self._int(1)])
        return (graph.node("Max", [index, self._int(0)]),
                graph.node("Greater", [self.counted, self._int(0)]))

    @cached_property
    def backward(self):
        """(index, exists) for a backwards direction, which processes the unmasked steps from
        the last: step t's output is number lengths - counted[t] + valid[t] - 1 (a masked step
        repeats the output of the next unmasked step in time, processed before it)."""
        graph = self.graph
        after = graph.node("Sub", [self.lengths, self.counted])  # unmasked steps after t
        index = graph.node("Sub", [graph.node("Add", [after, self.steps]), self._int(1)])
        return (graph.node("Max", [index, self._int(0)]),
                graph.node("Greater", [index, self._int(-1)]))

    def _order(self, backward: bool) -> str:
        """(time, batch): per row, the unmasked steps' positions first, in processing order
        (sort key valid * (time - t) going forwards, valid * (t + 1) backwards)."""
        import onnx

        graph = self.graph
        position = graph.node("Range", [self._int(0), self.time, self._int(1)])
        rank = (graph.node("Add", [position, self._int(1)]) if backward
                else graph.node("Sub", [self.time, position]))
        rank = graph.node("Unsqueeze", [rank, graph.axes(1)])
        key = graph.node("Cast", [graph.node("Mul", [self.steps, rank])], "order_key",
                         to=onnx.TensorProto.FLOAT)
        count = graph.node("Reshape", [self.time64, graph.constant("shape", np.array([1], np.int64))])
        _, order = graph.node("TopK", [key, count], "order", outputs=2, axis=0, largest=1,
                              sorted=1)
        return order

    @cached_property
    def forward_order(self) -> str:
        return self._order(backward=False)

    @cached_property
    def backward_order(self) -> str:
        return self._order(backward=True)

    def _gather_steps(self, values: str, index: str, *, like: str | None = None) -> str:
        """values (time, batch, units) gathered along time by a (steps, batch) index; the
        result has the shape of `like` (default: of `values`)."""
        graph = self.graph
        expanded = graph.node("Expand", [
            graph.node("Unsqueeze", [index, graph.axes(2)]),
            graph.node("Shape", [like or values])])
        return graph.node("GatherElements", [values, expanded], "gathered", axis=0)

    def compact(self, values: str, *, backward: bool = False) -> str:
        """Each row's unmasked steps moved to its front, in processing order."""
        return self._gather_steps(values, self.backward_order if backward else self.forward_order)

    def restore(self, outputs: str, *, backward: bool, zero_output: bool) -> str:
        """The operator's outputs (time, batch, units) put back at the steps Keras gives them."""
        graph = self.graph
        index, exists = self.backward if backward else self.forward
        keep = self.valid if zero_output else exists
        keep = graph.node("Unsqueeze", [keep, graph.axes(2)])
        return graph.node("Where", [keep, self._gather_steps(outputs, index),
                                    graph.constant("zero", np.array(0, np.float32))], "masked")

    @cached_property
    def last_index(self) -> str:
        """(1, batch): each row's last unmasked step in processing order (0 for a row with none)."""
        graph = self.graph
        last = graph.node("Max", [graph.node("Sub", [self.lengths, self._int(1)]), self._int(0)])
        return graph.node("Unsqueeze", [last, graph.axes(0)])

    @cached_property
    def empty(self) -> str:
        """(batch, 1) bool: the row has no unmasked step."""
        graph = self.graph
        return graph.node("Unsqueeze", [graph.node("Equal", [self.lengths, self._int(0)]),
                                        graph.axes(1)])

    def last_step(self, outputs: str, initial: str | None = None) -> str:
        """(batch, units): the operator's output at each row's last unmasked step; `initial`
        (zeros if None) for a row with none, as Keras keeps the initial state there."""
        graph = self.graph
        first = graph.time_range(outputs, 0, 1)
        last = graph.node("Squeeze", [self._gather_steps(outputs, self.last_index, like=first),
                                      graph.axes(0)], "last")
        return graph.node("Where", [self.empty, initial or graph.constant(
            "zero", np.array(0, np.float32)), last], "final_state")
