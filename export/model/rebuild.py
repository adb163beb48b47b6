"""The user's model rebuilt for export with its built-in recurrent layers as stand-ins.

One path per format for the whole graph: `keras.models.clone_model` rebuilds the user's model
(Sequential, functional or nested; branches, merges, several inputs and outputs, layers called
with `mask=` or `initial_state=`) layer by layer, every layer reused as it is (same weights)
except the built-in recurrent layers (`SimpleRNN`, `LSTM`, `GRU`, `keras.layers.RNN` over their
cells, and `Bidirectional` of those), which become a `RecurrentStandIn` of the same name:

- for TFLite, `export.tflite.forms.UnrolledRecurrent`: the time loop written out step by step
  from the trained weights, the fastest builtin form measured here, then the whole graph goes
  through the TFLite converter (builtin ops only);
- for ONNX, `export.onnx.splice.RecurrentMarker`: an opaque op that tf2onnx hands over (its
  `custom_op_handlers` hook) to be replaced by the native `RNN`/`LSTM`/`GRU` operator (tf2onnx
  itself would write GRU and SimpleRNN as a slow generic `Loop`).

Every other layer (convolutions, pooling, normalization, reshapes, merges, attention,
TimeDistributed of anything, custom cells, ConvLSTM) is converted by the standard converter,
as Keras computes it; masks flow between layers as Keras propagates them. A subclassed model
inside (its `call` is Python) runs as it is, with its built-in recurrent layers' calls swapped
for their stand-ins while it runs (`SwappedCalls`).
"""

from __future__ import annotations

import contextlib
import functools

from export.model.layers import describe_recurrent, is_graph_model, sublayers, swappable_layers
from export.model.signature import exportable, first_line, float32_twin
from export.model.state import state_sizes, state_variables
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import UnsupportedModelError

load_tensorflow()  # TensorFlow's start-up kept quiet before Keras imports it
import keras  # noqa: E402  (the stand-in layers below are Keras layers)


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

    @property
    def output_count(self) -> int:
        """The layer's outputs before its states: 2 for `Bidirectional(merge_mode=None)`,
        which returns each direction's, else 1."""
        return 2 if getattr(self.description, "merge_mode", "") is None else 1

    def _output_specs(self, batch, steps, *, with_states=None):
        """The outputs' specs: a list with the final states when `with_states` (default:
        as the layer returns them), else the outputs alone (one, or a list of two)."""
        with_states = self.return_state if with_states is None else with_states
        units = self.description.units
        shape = (batch, steps, units) if self.return_sequences else (batch, units)
        outputs = [keras.KerasTensor(shape, "float32") for _ in range(self.output_count)]
        if with_states:
            outputs += [keras.KerasTensor((batch, size), "float32")
                        for size in state_sizes(self.description)]
        return outputs if with_states or len(outputs) > 1 else outputs[0]

    def own_outputs(self, results: list):
        """`[outputs..., states...]` as the layer returns them (see `_output_specs`)."""
        if self.return_state or self.output_count > 1:
            return results if self.return_state else results[:self.output_count]
        return results[0]

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
        masks = [output_mask] * self.output_count
        if self.return_state:
            return masks + [None] * len(state_sizes(self.description))
        return masks if len(masks) > 1 else output_mask


def given_states(initial_state) -> list | None:
    """`initial_state=` as a stand-in receives it, as a list: Keras also takes one bare tensor
    (`initial_state=h0`) for a layer with one state."""
    if initial_state is None or isinstance(initial_state, (list, tuple)):
        return None if initial_state is None else list(initial_state)
    return [initial_state]


def clone_with(model, stand_in, *, batched_dense: bool = False, time_distributed=None):
    """`model` rebuilt with each built-in recurrent layer replaced by `stand_in(layer,
    description)`; every other layer is reused as is (its weights included), but for
    `TimeDistributed`, which becomes one reshape around its inner layer (`FlatTimeDistributed`;
    recurrent layers inside it replaced by `time_distributed(layer, description)`, default
    `stand_in`: a step model streams the outer time axis while they run whole sequences), and
    with `batched_dense` (for ONNX), `Dense` (`BatchedDense`)."""
    inner_stand_in = time_distributed or stand_in

    def clone_function(layer):
        if isinstance(layer, keras.layers.TimeDistributed):
            inner = layer.layer
            description = describe_recurrent(inner)
            if description is not None:  # TimeDistributed(LSTM(...)): the stand-in inside
                return FlatTimeDistributed(layer, inner_stand_in(inner, description))
            if isinstance(inner, keras.Model) and is_graph_model(inner):  # an encoder model
                return FlatTimeDistributed(layer, clone_with(inner, inner_stand_in,
                                                             batched_dense=batched_dense))
            if not getattr(inner, "_call_has_mask_arg", False):
                return FlatTimeDistributed(layer)
        if (batched_dense and type(layer) is keras.layers.Dense
                and getattr(layer, "quantization_mode", None) is None
                and not getattr(layer, "lora_enabled", False)):
            return BatchedDense(layer)
        description = describe_recurrent(layer)
        if description is None and isinstance(layer, keras.Model) and not is_graph_model(
                layer) and swappable_layers(layer):
            return SwappedCalls(layer, stand_in)
        return layer if description is None else stand_in(layer, description)

    try:
        return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    except UnsupportedModelError:
        raise
    except Exception as error:  # Keras's own messages for graphs it cannot rebuild
        raise UnsupportedModelError(
            f"Model {model.name!r} could not be rebuilt for export ({type(error).__name__}: "
            f"{first_line(error)})."
        ) from error


@contextlib.contextmanager
def dropout_off(model):
    """Traces `model` for inference with its recurrent cells' dropout rates at 0, restored
    after. Keras's cells draw their dropout masks even at inference, where they go unused,
    and drawing advances a seed generator's state: a traced graph would hold a variable
    update that no converter takes ("AssignVariableOp was passed int64 ... incompatible with
    expected resource"), in the WHILE form and inside TimeDistributed. Inference never
    applies dropout, so the rates change nothing else."""
    cells = [(layer, layer.dropout, layer.recurrent_dropout) for layer in sublayers(model)
             if hasattr(layer, "get_dropout_mask") and (layer.dropout or layer.recurrent_dropout)]
    try:
        for cell, _, _ in cells:
            cell.dropout = cell.recurrent_dropout = 0.0
        yield model
    finally:
        for cell, dropout, recurrent_dropout in cells:
            cell.dropout, cell.recurrent_dropout = dropout, recurrent_dropout


def for_export(function):
    """The exporters' entry points, `function(model, ...)`, run on `exportable(model)` (a
    subclassed model's functional view), computing in float32 (`float32_twin`), under
    `dropout_off`."""
    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        try:
            model = float32_twin(exportable(model))
            with dropout_off(model):
                return function(model, *args, **kwargs)
        except (ValueError, TypeError, MemoryError):  # refusals and argument errors, as raised
            raise
        except Exception as error:  # TensorFlow's, Keras's or a converter's own exception
            raise UnsupportedModelError(
                f"Model {getattr(model, 'name', model)!r} could not be exported "
                f"({type(error).__name__}: {first_line(error)}).") from error

    return wrapper


class SwappedCalls(keras.layers.Layer):
    """A subclassed model in the rebuilt graph: its own Python `call`, run with the `call` of
    each built-in recurrent layer it holds swapped for its stand-in's while it runs, so the
    layers it calls get the native forms (the model's code is not read, only run, as Keras's
    exporters run it). A layer whose stand-in did not run (its cell used directly, say) keeps
    the converter's form, and `ran_natively` says which did (`recurrent_forms`)."""

    def __init__(self, original, stand_in):
        super().__init__(name=original.name)
        self.original = original
        pairs = [(layer, stand_in(layer, describe_recurrent(layer)))
                 for layer in swappable_layers(original)]
        # (kept in a plain tuple: Keras would track the stand-ins' layers as this layer's)
        object.__setattr__(self, "_swaps", tuple((layer, new) for layer, new in pairs
                                                 if new is not layer))
        self.ran_natively = set()

    def compute_output_spec(self, *args, **kwargs):
        return self.original.compute_output_spec(*args, **kwargs)

    def call(self, *args, **kwargs):
        with _swapped(self._swaps, self.ran_natively):
            return self.original(*args, **kwargs)


@contextlib.contextmanager
def _swapped(swaps, ran: set):
    """Each `(layer, stand_in)`: the layer's `call` is the stand-in's inside the block (an
    instance attribute, which Keras's `Layer.__call__` calls after its mask and argument
    handling); names of the layers called are added to `ran`."""
    def calling(layer, stand_in):
        def call(sequences, initial_state=None, mask=None, training=None):
            ran.add(layer.name)
            return stand_in.call(sequences, mask=mask, initial_state=initial_state,
                                 training=training)
        return call

    try:
        for layer, stand_in in swaps:
            object.__setattr__(layer, "call", calling(layer, stand_in))
        yield
    finally:
        for layer, _ in swaps:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")


class FlatTimeDistributed(keras.layers.Layer):
    """`TimeDistributed(layer)` as Keras computes it for a static time axis, written as one
    reshape: (batch, time, ...) -> (batch * time, ...) -> the layer -> back. Keras itself
    runs a free time axis through `vectorized_map`, a while loop that tf2onnx converts
    into a `Loop` with wrong shapes, and a static one as one call per step (each recurrent
    layer inside converted once per step, as a `Loop` in ONNX). `inner` is the layer to run:
    the original's own, or its rebuilt form (a recurrent stand-in, a rebuilt encoder model).
    A mask with the inner axes (ids masked per word, say) is flattened alike and handed to
    an inner layer that takes one, as Keras hands each step its slice."""

    def __init__(self, original, inner=None):
        super().__init__(name=original.name)
        self.inner = original.layer if inner is None else inner
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
        options = {}
        if (mask is not None and len(mask.shape) > 2
                and getattr(self.original.layer, "_call_has_mask_arg", False)):
            options["mask"] = ops.reshape(mask, (-1,) + tuple(mask.shape[2:]))
        outputs = self.inner(flat, training=False, **options)
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
