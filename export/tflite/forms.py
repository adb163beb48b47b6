"""How a .tflite file writes each recurrent layer's time loop, and the unrolled form's TF ops.

`choose_form` picks among the unrolled loop (`UnrolledRecurrent`: one FULLY_CONNECTED for
every step's input projection, then per step the recurrent matmul and element-wise builtins, a
SELECT per step where a mask is, exactly as Keras skips masked steps), the converter's WHILE
loop, and the fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel (through a tf-keras rebuild,
`fixed_shape_model`). The unrolled form is the fastest float one measured here
(`benchmarks/latency.py`); int8 files take the WHILE loop, calibrated by
`export.tflite.quantize.loops_calibrated` (the converter's calibrator segfaults on it,
TensorFlow issue 75140).
"""

from __future__ import annotations

import numpy as np

from export.formats import get_quantize_mode
from export.model.layers import cell_runs
from export.model.rebuild import RecurrentStandIn, given_states
from keras_rnn.cells import cell
from keras_rnn.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Masking,
    Recurrent,
    Stacked,
    UnsupportedModelError,
)

FORMS = ("auto", "unrolled", "while", "fused")
FORM_NAMES = {"unrolled": "unrolled", "while": "WHILE loop",  # how the report names them
              "fused": "UNIDIRECTIONAL_SEQUENCE_LSTM"}
MAX_UNROLLED_STEPS = 1000  # beyond this the unrolled graph gets large and slow to convert
# "auto" unrolls while the file holds at most this many cell steps (steps x directions x
# layers): the export's time and memory grow with that count. Measured by
# benchmarks/export_cost.py (LSTM, hidden 512, peak RSS with TensorFlow's own 0.6 GB):
# unrolled 50 steps 2.9 s / 0.92 GB, 200 steps 6.8 s / 1.06 GB, 1000 steps 32 s / 1.7 GB;
# the WHILE form 1.2 s / 0.71 GB at any length. 500 keeps "auto" under 1.5 GB.
MAX_AUTO_UNROLLED_CELL_STEPS = 500


def choose_form(recurrent, seq_len, form: str = "auto", quantize=None, *,
                stateful: bool = False) -> str:
    """The time-loop form of the .tflite file, for a model whose recurrent layers are
    `recurrent` (their `Recurrent`/`Bidirectional` descriptions).

    - `"unrolled"`: every step written out (FULLY_CONNECTED + element-wise ops). Fastest in
      `benchmarks/latency.py` for every cell at the lecture and medium sizes (LSTM included:
      1.3-1.5x the ONNX Runtime floor at 50 steps, hidden 128, against 2.1-2.2x for the fused
      op). Up to `MAX_UNROLLED_STEPS` steps.
    - `"while"`: the converter's own WHILE loop over one step; any length, a small file.
    - `"fused"`: `UNIDIRECTIONAL_SEQUENCE_LSTM`, the converter's fused LSTM kernel, which it
      emits only for models built with tf-keras (Keras 2); LSTM models only (TFLite has no
      fused GRU, and leaves a tf-keras SimpleRNN as a WHILE loop).

    `"auto"` picks "unrolled" up to `MAX_AUTO_UNROLLED_CELL_STEPS` cell steps (steps times
    the recurrent directions of every layer: what the export's time and memory grow with) and
    "while" beyond. For int8 it picks "while" (calibrated by
    `export.tflite.quantize.loops_calibrated`), the smallest int8 file: on the medium models
    (50 steps, 64 features, hidden 128, a Dense head per step, `benchmarks/variants.py`) 1.11x
    (LSTM) and 1.13x (GRU) the parameter count in bytes against 1.99x and 2.53x unrolled,
    whose per-step tensor tables and quantization parameters repeat 50 times, with the same
    agreement; unrolled int8 is the faster one there (1.1-2.8x at batch 1, 2.5-7.9x at 64;
    for layers ending on the last state the loop was the faster, 1.8-2.6x at batch 1). A
    model with stateful layers unrolls (the loop calibration runs stateless models). `"fused"` takes int8 too
    (1.06x on the medium LSTM; its kernel computes the cell state in int16 and was 4.9x slower
    than the fused float file when measured for issue 19). It never picks "fused": the fused
    LSTM keeps its state in variable tensors that LiteRT carries from one `invoke()` to the
    next, so a plain interpreter gives a wrong answer from the second call on unless it calls
    `reset_all_variables()` first (`export.runtime` does).
    """
    if form not in FORMS:
        raise ValueError(f"Unknown form {form!r}: expected one of {FORMS}.")
    cells = {run.cell for layer in recurrent for run in cell_runs(layer)}
    calibrated = get_quantize_mode(quantize).needs_calibration
    if form == "auto":
        if calibrated:
            return "unrolled" if stateful else "while"
        directions = sum(len(cell_runs(layer)) for layer in recurrent)
        if seq_len is None or seq_len * directions <= MAX_AUTO_UNROLLED_CELL_STEPS:
            return "unrolled"
        return "while"
    if form == "fused" and cells != {"lstm"}:
        raise ValueError(
            f"form='fused' needs LSTM layers only (UNIDIRECTIONAL_SEQUENCE_LSTM); this model "
            f"has {sorted(cells)}. TFLite has no fused GRU or SimpleRNN kernel: use 'unrolled' "
            "or 'while'."
        )
    if form == "while" and calibrated and stateful:
        raise ValueError(
            f"quantize={quantize!r} calibrates the 'while' form of models without stateful "
            "layers only (a stateful file's state variables live across its calls): use "
            "form='unrolled'.")
    return form


def fixed_shape_model(model, structure, batch_size: int, seq_len: int):
    """The model rebuilt in tf-keras with a fixed input shape and the weights copied: the
    converter fuses only tf-keras LSTM layers into UNIDIRECTIONAL_SEQUENCE_LSTM."""
    shape = (seq_len,) if structure.takes_ids else (seq_len, structure.input_shape[2])
    try:
        import tf_keras
    except ImportError as error:
        raise ValueError("form='fused' needs the tf-keras package (pip install -r "
                         "requirements.txt).") from error
    rebuilt = [tf_keras.Input(shape, batch_size=batch_size, dtype=structure.input_dtype)]
    weights = []

    def lstm(layer, **extra):
        weights.extend([layer.kernel, layer.recurrent_kernel, layer.bias])
        return tf_keras.layers.LSTM(layer.units, activation=layer.activation,
                                    recurrent_activation=layer.recurrent_activation,
                                    return_sequences=layer.return_sequences,
                                    go_backwards=layer.go_backwards, **extra)

    for layer in structure.layers:
        if isinstance(layer, Embedding):
            weights.append(layer.table)
            rebuilt.append(tf_keras.layers.Embedding(*layer.table.shape, mask_zero=layer.mask_zero))
        elif isinstance(layer, Masking):
            rebuilt.append(tf_keras.layers.Masking(layer.mask_value))
        elif isinstance(layer, Recurrent):
            rebuilt.append(lstm(layer))
        elif isinstance(layer, Bidirectional):
            forward = lstm(layer.forward)
            backward = lstm(layer.backward)
            rebuilt.append(tf_keras.layers.Bidirectional(forward, backward_layer=backward,
                                                         merge_mode=layer.merge_mode))
        elif isinstance(layer, Dense):
            weights.extend([layer.kernel, layer.bias])
            rebuilt.append(tf_keras.layers.Dense(layer.kernel.shape[1],
                                                 activation=layer.activation))
        elif isinstance(layer, Activation):
            rebuilt.append(tf_keras.layers.Activation(layer.activation))
    fixed = tf_keras.Sequential(rebuilt)
    fixed.set_weights(weights)
    return fixed


def dense_op(values, kernel, bias):
    """x @ kernel + bias as one 2-D FULLY_CONNECTED, for any leading shape."""
    import tensorflow as tf

    shape = values.shape
    flat = tf.reshape(values, [-1, shape[-1]])
    result = tf.matmul(flat, tf.constant(kernel)) + tf.constant(bias)
    return tf.reshape(result, [-1 if size is None else size for size in shape[:-1]]
                      + [kernel.shape[1]])


def activation_op(name: str, values):
    import tensorflow as tf

    if name == "linear":
        return values
    if name == "hard_sigmoid":
        return tf.clip_by_value(values / 6.0 + 0.5, 0.0, 1.0)
    if name == "softsign":  # (tf.nn.softsign has no builtin kernel)
        return values / (1.0 + tf.abs(values))
    if name == "softplus":  # log(1 + e^x) without overflow; (tf.nn.softplus has no builtin)
        return tf.nn.relu(values) + tf.math.log(1.0 + tf.exp(-tf.abs(values)))
    if name == "elu":
        return tf.nn.elu(values)
    return {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu,
            "softmax": tf.nn.softmax}[name](values)


def unrolled_recurrent(layer: Recurrent, values, mask, initial_state=None, *, return_state=False):
    """The layer's time loop, unrolled; same masking rules as Keras (see reference.py).

    `initial_state` is `[h]` (`[h, c]` for LSTM), zeros by default; with `return_state` the
    final states follow the outputs, as Keras's `return_state=True` gives them."""
    import tensorflow as tf

    timesteps = values.shape[1]
    if timesteps is None:
        raise ValueError(f"Layer {layer.name!r} gets sequences of unknown length here; the "
                         "unrolled form needs a fixed number of steps (seq_len=).")
    batch = values.shape[0] if values.shape[0] is not None else tf.shape(values)[0]
    units = layer.units
    # All input projections at once: (batch, time, gates * units)
    projected = tf.unstack(dense_op(values, layer.kernel, input_bias(layer)), axis=1)
    mask_steps = tf.unstack(mask, axis=1) if mask is not None else None
    zeros = tf.zeros((batch, units), tf.float32)
    kind = cell(layer.cell)
    states = list(initial_state)[:kind.state_count()] if initial_state else (
        [zeros] * kind.state_count())
    output = zeros
    outputs = []
    order = range(timesteps - 1, -1, -1) if layer.go_backwards else range(timesteps)
    # One constant per weight however many steps use it: a constant made inside the loop is
    # copied into the graph once per step (a 512-unit LSTM at 1000 steps: 4 GB of GraphDef).
    weights = kind.tf_weights(layer)
    for t in order:
        new_states = cell_step(layer, projected[t], states, weights)
        if mask_steps is None:
            output, states = new_states[0], new_states
        else:
            keep = tf.broadcast_to(mask_steps[t][:, None], (batch, units))
            output = tf.where(keep, new_states[0], zeros if layer.zero_output_for_mask else output)
            states = [tf.where(keep, new, old) for new, old in zip(new_states, states)]
        outputs.append(output)
    result = tf.stack(outputs, axis=1) if layer.return_sequences else outputs[-1]
    if return_state:
        return result, states
    return result


def input_bias(layer: Recurrent):
    """The bias added to the input projection. A GRU with reset_after keeps a second,
    recurrent one (its bias is (2, 3 * units)): its update and reset parts are added here too,
    once for every step, and only its candidate part, which the reset gate multiplies, stays
    in the step (`keras_rnn.cells`). A bias inside the step's recurrent FULLY_CONNECTED is
    requantized for every step in int8 files (each step's state has its own scale): 50 int32
    copies with per-channel parameters, 6.8x the parameter count on the medium GRU."""
    if layer.bias.ndim == 1:
        return layer.bias
    units = layer.units
    recurrent = np.concatenate([layer.bias[1][:2 * units], np.zeros(units, layer.bias.dtype)])
    return layer.bias[0] + recurrent


def cell_step(layer: Recurrent, x_t, states: list, weights: dict | None = None) -> list:
    """One step of the layer's cell (`keras_rnn.cells`) as TF ops, from the projected input
    `x_t = x @ kernel + input bias`: the new states, `[h]` or `[h, c]`. `weights`: the cell's
    `tf_weights(layer)`, made once and shared by every step."""
    kind = cell(layer.cell)
    act = lambda x: activation_op(layer.activation, x)  # noqa: E731
    gate = lambda x: activation_op(layer.recurrent_activation, x)  # noqa: E731
    return kind.tf_step(layer, x_t, states, weights or kind.tf_weights(layer), act, gate)


def run_recurrent(description, values, mask=None, initial_state=None, return_state=False):
    """A built-in recurrent layer (`Recurrent` or `Bidirectional`) as unrolled TF ops, with
    Keras's masking, `initial_state` (Keras's order: the forward direction's states, then the
    backward one's) and `return_state` (outputs, then the final states in that order)."""
    import tensorflow as tf

    initial_state = list(initial_state or [])
    if isinstance(description, Stacked):
        if initial_state:
            raise UnsupportedModelError(
                f"Layer {description.name!r} (RNN over StackedRNNCells) is called with "
                "initial_state, which its native form does not take yet.")
        for inner in description.layers:  # each cell over the whole sequence, in turn
            values = unrolled_recurrent(inner, values, mask)
        return values
    if isinstance(description, Recurrent):
        result = unrolled_recurrent(description, values, mask, initial_state or None, return_state=True)
        return [result[0]] + result[1] if return_state else result[0]
    half = len(cell(description.forward.cell).states) if initial_state else 0
    forward, forward_states = unrolled_recurrent(description.forward, values, mask,
                                         initial_state[:half] or None, return_state=True)
    backward, backward_states = unrolled_recurrent(description.backward, values, mask,
                                           initial_state[half:] or None, return_state=True)
    if description.return_sequences:
        backward = tf.reverse(backward, axis=[1])
    if description.merge_mode is None:  # both directions returned
        outputs = [forward, backward]
    elif description.merge_mode == "concat":
        outputs = [tf.concat([forward, backward], axis=-1)]
    elif description.merge_mode == "sum":
        outputs = [forward + backward]
    elif description.merge_mode == "ave":
        outputs = [(forward + backward) * 0.5]
    else:
        outputs = [forward * backward]
    if return_state:
        return outputs + forward_states + backward_states
    return outputs if len(outputs) > 1 else outputs[0]


def unrolled_stand_in(original, description):
    """The TFLite stand-in of a built-in recurrent layer (see `export.model.rebuild`)."""
    return UnrolledRecurrent(original, description)


class UnrolledRecurrent(RecurrentStandIn):
    """The layer's time loop written out step by step from its trained weights: one
    FULLY_CONNECTED for every step's input projection at once, then per step the
    recurrent matmul and element-wise builtins; a SELECT per step where a mask is."""

    def call(self, inputs, mask=None, initial_state=None, training=None):
        inputs = self.with_known_shape(inputs)
        initial_state = given_states(initial_state)
        states = self.kept_states()
        if not states:
            return run_recurrent(self.description, inputs, mask, initial_state,
                                 self.return_state)
        # stateful=True: start from the kept state (unless given one, as Keras does) and
        # keep the final state for the next call
        if initial_state is None:
            initial_state = [variable.value for variable in states]
        results = run_recurrent(self.description, inputs, mask, initial_state, True)
        for variable, state in zip(states, results[self.output_count:]):
            variable.assign(state)
        return self.own_outputs(results)

    def run_with_states(self, inputs, states):
        """One run from `states`, returning `[outputs] + final states` (step models)."""
        return run_recurrent(self.description, self.with_known_shape(inputs), None,
                             states, True)
