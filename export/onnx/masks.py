"""Keras's masks with the native recurrent operators, for any padding pattern.

A `mask_zero` Embedding or a `Masking` layer gives a (batch, time) mask, and each recurrent
layer reproduces Keras's masking exactly for any pattern (padding at the start, the end, or
steps masked in the middle of a row): the unmasked steps of each row are gathered to its front,
the native operator runs them with `sequence_lens`, and every output is gathered back to its
step, a masked step repeating the output of the step before it in processing order (or zeros,
with `zero_output_for_mask`), as Keras's time loop does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from export.onnx.operators import GraphBuilder


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
