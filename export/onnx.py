"""Keras RNN -> ONNX with the native recurrent operators (`RNN`, `LSTM`, `GRU`).

The graph is emitted node by node from the trained weights (`keras_rnn.structure`), not traced:
tf2onnx 1.17 cannot read Keras 3 Sequential models (`KeyError: 'keras_tensor_N'`), and when it
converts a traced function it keeps SimpleRNN and GRU as a generic `Loop`, 5-7x slower in ONNX
Runtime than the native operators used here. Batch and time axes stay dynamic.

Padding: a `mask_zero` Embedding or a `Masking` layer becomes the operators' `sequence_lens`
(the number of non-padding steps per row). This equals Keras's masking for padding at the end
of each row (`pad_sequences(padding="post")`, what `Vocabulary.encode_batch` produces).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from keras_rnn.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Masking,
    Recurrent,
    UnsupportedModelError,
    read_model,
)

DEFAULT_OPSET = 17
MIN_OPSET = 14  # Softmax over the last axis alone, ReduceSum with axes as an input
MAX_OPSET = 21  # the newest opset checked against onnxruntime 1.31 here
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
_ONNX_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}
_HEAD_OPS = {"softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
_OPERATOR = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def export_onnx(model, path, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None) -> Path:
    """Exports a Keras RNN model to an ONNX file that ONNX Runtime runs.

    Args:
        model: a built Keras model (Sequential or functional chain) of the supported layers.
        path: the `.onnx` file to write; written atomically (no partial file on failure).
        opset: ONNX opset, from 14 to 21.
        metadata: string key/values stored in `metadata_props` (e.g. the vocabulary, see
            `export.metadata`), readable by any ONNX runtime.

    Returns:
        The written path. Input `inputs`: `(batch, timesteps, features)` float32 or
        `(batch, timesteps)` int32 ids; output `outputs`; both axes dynamic.
    """
    path = check_writable(path, suffix=".onnx")
    proto = build_onnx(model, opset=opset, metadata=metadata)
    return write_atomic(path, proto.SerializeToString())


def build_onnx(model, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """The ONNX `ModelProto` for `model`, checked with `onnx.checker` (full check)."""
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"`opset` must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}.")
    structure = read_model(model)
    graph = _GraphBuilder(structure, opset)
    return finish_model(graph.build(name=model.name), opset, metadata)


def finish_model(graph_proto, opset: int, metadata: dict | None):
    """Wraps a graph into a checked `ModelProto` that onnxruntime 1.31 loads."""
    import onnx

    opset_id = onnx.helper.make_opsetid("", opset)
    proto = onnx.helper.make_model(
        graph_proto,
        opset_imports=[opset_id],
        producer_name="keras-rnn",
        # onnx 1.23 would write IR version 14, which onnxruntime 1.31 refuses to load: use the
        # lowest IR version that carries this opset.
        ir_version=onnx.helper.find_min_ir_version_for([opset_id]),
    )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


class _GraphBuilder:
    """Emits nodes layer by layer, tracking the current tensor and its time layout."""

    def __init__(self, structure, opset: int):
        self.structure = structure
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.counter = 0

    # -- small helpers ---------------------------------------------------------------------
    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def constant(self, stem: str, array) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs, stem: str | None = None, outputs: int = 1, **attributes):
        import onnx

        names = [self.fresh(stem or op.lower()) for _ in range(outputs)]
        self.nodes.append(onnx.helper.make_node(op, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    # -- the graph -----------------------------------------------------------------------
    def build(self, *, name: str):
        import onnx

        structure = self.structure
        features = structure.input_shape[2] if not structure.takes_ids else None
        if structure.takes_ids:
            input_info = onnx.helper.make_tensor_value_info(
                INPUT_NAME, onnx.TensorProto.INT32, ["batch", "timesteps"]
            )
        else:
            input_info = onnx.helper.make_tensor_value_info(
                INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", "timesteps", features]
            )
        values, time_major = INPUT_NAME, False
        if structure.takes_ids and str(structure.input_dtype) != "int32":
            values = self.node("Cast", [values], "ids", to=onnx.TensorProto.INT32)
        lengths = padding = None  # (batch,) int32 valid steps; (batch, time) float 1 = padding
        for layer in structure.layers:
            if isinstance(layer, Embedding):
                if layer.mask_zero:
                    lengths, padding = self.padding_from(
                        self.node("Equal", [values, self.constant("zero", np.array(0, np.int32))])
                    )
                values = self.node("Gather", [self.constant("embeddings", layer.table), values],
                                   "embedded", axis=0)
            elif isinstance(layer, Masking):
                # A step is padding when every feature equals mask_value; Keras also zeroes it.
                differs = self.node("Cast", [self.node("Not", [self.node("Equal", [
                    values, self.constant("mask_value", np.array(layer.mask_value, np.float32))
                ])])], to=onnx.TensorProto.FLOAT)
                keep = self.node("ReduceMax", [differs, self.constant("axes", np.array([-1], np.int64))],
                                 keepdims=0) if self.opset >= 18 else self.node(
                    "ReduceMax", [differs], axes=[-1], keepdims=0)
                is_padding = self.node("Equal", [keep, self.constant("zero", np.array(0, np.float32))])
                lengths, padding = self.padding_from(is_padding)
                keep_3d = self.node("Unsqueeze", [keep, self.constant("axes", np.array([-1], np.int64))])
                values = self.node("Mul", [values, keep_3d], "masked")
            elif isinstance(layer, (Recurrent, Bidirectional)):
                if not time_major:
                    values, time_major = self.node("Transpose", [values], "time_major",
                                                   perm=[1, 0, 2]), True
                values = self.recurrent(layer, values, lengths, padding)
                if not layer.return_sequences:
                    time_major = False
                    lengths = padding = None
            elif isinstance(layer, (Dense, Activation)):
                values = self.head(layer, values)
        if time_major:
            values = self.node("Transpose", [values], perm=[1, 0, 2])
        self.nodes.append(onnx.helper.make_node("Identity", [values], [OUTPUT_NAME]))
        output_shape = ["batch"] + (["timesteps"] if time_major else []) + [None]
        output_info = onnx.helper.make_tensor_value_info(
            OUTPUT_NAME, onnx.TensorProto.FLOAT, output_shape
        )
        return onnx.helper.make_graph(
            self.nodes, name, [input_info], [output_info], initializer=self.initializers
        )

    def padding_from(self, is_padding: str):
        """From a (batch, time) boolean 'is padding' tensor: sequence_lens and a float mask."""
        import onnx

        valid = self.node("Cast", [self.node("Not", [is_padding])], to=onnx.TensorProto.INT32)
        lengths = self.node("ReduceSum", [valid, self.constant("axes", np.array([1], np.int64))],
                            "sequence_lens", keepdims=0)
        padding = self.node("Cast", [is_padding], to=onnx.TensorProto.FLOAT)
        # time-major (time, batch, 1), to broadcast against the recurrent outputs
        padding = self.node("Unsqueeze", [self.node("Transpose", [padding], perm=[1, 0]),
                                          self.constant("axes", np.array([-1], np.int64))],
                            "padding")
        return lengths, padding

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
    def recurrent(self, layer, values: str, lengths, padding) -> str:
        """Emits one RNN/LSTM/GRU node for a layer (both directions for Bidirectional).

        `values` is time-major (time, batch, features); returns time-major outputs, or
        (batch, units) when the layer returns only its last step.
        """
        directions = [layer.forward, layer.backward] if isinstance(layer, Bidirectional) else [layer]
        first = directions[0]
        if isinstance(layer, Recurrent) and layer.go_backwards and lengths is not None:
            raise UnsupportedModelError(
                f"Layer {layer.name!r} runs go_backwards on padded input; Keras returns its "
                "outputs in reversed order including the padding, which the ONNX operators "
                "cannot reproduce. Wrap the layer in Bidirectional instead."
            )
        if isinstance(layer, Bidirectional):
            direction_name = "bidirectional"
        else:
            direction_name = "reverse" if layer.go_backwards else "forward"
        inputs, attributes = self.operator_inputs(layer.name, directions, values, direction_name)
        inputs.append(lengths or "")
        all_steps, last_step = self.node(_OPERATOR[first.cell], inputs, _OPERATOR[first.cell],
                                         outputs=2, **attributes)
        # all_steps: (time, directions, batch, units); last_step: (directions, batch, units)
        if not layer.return_sequences:
            if isinstance(layer, Bidirectional):
                return self.merge(layer.merge_mode, last_step, batch_major_last=True)
            return self.node("Squeeze", [last_step, self.constant("axes", np.array([0], np.int64))],
                             "last_output")
        if isinstance(layer, Bidirectional):
            return self.merge(layer.merge_mode, all_steps, batch_major_last=False)
        outputs = self.node("Squeeze", [all_steps, self.constant("axes", np.array([1], np.int64))],
                            "sequence")
        if layer.go_backwards:  # Keras returns a backwards layer's outputs in processing order
            outputs = self.node("Slice", [outputs, self.constant("starts", np.array([-1], np.int64)),
                                          self.constant("ends", np.array([np.iinfo(np.int64).min], np.int64)),
                                          self.constant("axes", np.array([0], np.int64)),
                                          self.constant("steps", np.array([-1], np.int64))])
        if padding is not None and not layer.zero_output_for_mask:
            # ONNX writes zeros after a row's last valid step; Keras repeats the last valid
            # output there: add (padding * last output), the last output being Y_h.
            outputs = self.node("Add", [outputs, self.node("Mul", [padding, last_step])],
                                "carried")
        return outputs

    def operator_inputs(self, name: str, directions, values: str, direction_name: str):
        """The inputs X, W, R, B and the attributes of one RNN/LSTM/GRU node."""
        first = directions[0]
        for direction in directions:
            for activation in (direction.activation, direction.recurrent_activation):
                if direction.cell == "simple_rnn" and activation == direction.recurrent_activation:
                    continue
                if activation not in _ONNX_ACTIVATIONS:
                    raise UnsupportedModelError(
                        f"Layer {name!r} uses activation {activation!r}, which the ONNX "
                        f"recurrent operators do not take here; supported: {list(_ONNX_ACTIVATIONS)}."
                    )
        W, R, B = zip(*(_onnx_weights(direction) for direction in directions))
        activations = []
        for direction in directions:
            if direction.cell == "simple_rnn":
                activations += [_ONNX_ACTIVATIONS[direction.activation]]
            elif direction.cell == "lstm":
                activations += [_ONNX_ACTIVATIONS[direction.recurrent_activation]] + [
                    _ONNX_ACTIVATIONS[direction.activation]] * 2
            else:
                activations += [_ONNX_ACTIVATIONS[direction.recurrent_activation],
                                _ONNX_ACTIVATIONS[direction.activation]]
        attributes = dict(hidden_size=first.units, direction=direction_name,
                          activations=activations)
        if first.cell == "gru":
            attributes["linear_before_reset"] = int(first.reset_after)
        inputs = [values, self.constant("W", np.stack(W)), self.constant("R", np.stack(R)),
                  self.constant("B", np.stack(B))]
        return inputs, attributes

    def merge(self, mode: str, values: str, *, batch_major_last: bool) -> str:
        """Merges the direction axis: (time, 2, batch, units) -> (time, batch, merged), or
        (2, batch, units) -> (batch, merged) for the last step."""
        direction_axis = 0 if batch_major_last else 1
        if mode == "concat":
            perm = [1, 0, 2] if batch_major_last else [0, 2, 1, 3]
            moved = self.node("Transpose", [values], perm=perm)
            shape = [0, -1] if batch_major_last else [0, 0, -1]
            return self.node("Reshape", [moved, self.constant("shape", np.array(shape, np.int64))],
                             "concat")
        axes = self.constant("axes", np.array([direction_axis], np.int64))
        if mode in ("sum", "ave"):
            total = self.node("ReduceSum", [values, axes], keepdims=0)
            if mode == "sum":
                return total
            return self.node("Mul", [total, self.constant("half", np.array(0.5, np.float32))])
        forward, backward = self.node("Split", [values, self.constant(
            "split", np.array([1, 1], np.int64))], outputs=2, axis=direction_axis)
        product = self.node("Mul", [forward, backward])
        return self.node("Squeeze", [product, axes])


def _onnx_weights(layer: Recurrent):
    """Keras (input, gates*units) kernels -> ONNX W (gates*units, input), R, B = [Wb, Rb]."""
    units = layer.units
    kernel, recurrent, bias = layer.kernel, layer.recurrent_kernel, layer.bias
    if layer.cell == "lstm":
        # Keras gate order i, f, c, o; ONNX i, o, f, c
        order = [0, 3, 1, 2]
        regroup = lambda m: np.concatenate(  # noqa: E731
            [m[..., k * units:(k + 1) * units] for k in order], axis=-1)
        kernel, recurrent, bias = regroup(kernel), regroup(recurrent), regroup(bias)
    if layer.cell == "gru" and layer.reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros_like(bias)
    return (
        kernel.T.astype(np.float32),
        recurrent.T.astype(np.float32),
        np.concatenate([input_bias, recurrent_bias]).astype(np.float32),
    )
