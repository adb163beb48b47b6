"""Keras model -> a .tflite of TFLite builtin ops only, for the standalone LiteRT interpreter.

`export.graph` rebuilds the model with each built-in recurrent layer as `UnrolledRecurrent`:
its time loop written out from the trained weights (`run_recurrent`), one FULLY_CONNECTED for
all steps' input projections, then per step the recurrent matmul and element-wise builtins, a
SELECT per step where a mask is, exactly as Keras skips masked steps. The whole graph, batch
and lengths fixed, goes through the TFLite converter with builtin ops only (Keras's own
`model.export(format="litert")` enables Flex ops, which the standalone interpreter refuses),
and the flatbuffer's operator list is read back to refuse any Flex or custom op. The unrolled
form is the fastest builtin one measured here (`benchmarks/latency.py`), needs no cuDNN kernels,
and is one the int8 calibrator handles (full-int8 calibration of a WHILE loop segfaults,
TensorFlow issue 75140). `form=` also offers the converter's WHILE loop and, for LSTM chains,
the fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel (see `choose_form`).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from export.formats import QUANTIZE_MODES, get_quantize_mode
from export.graph import (
    SINGLE_INPUT_NAME,
    SINGLE_OUTPUT_NAME,
    RecurrentStandIn,
    all_layers,
    cell_runs,
    check_exportable,
    clone_with,
    describe_recurrent,
    frozen_inference,
    input_specs,
    named_inference,
    output_names,
    recurrent_forms,
    state_layout,
    state_variables,
    stateful_batch,
    stateful_layers,
    states_reset,
)
from export.runtime import (
    FORMS_METADATA,
    RESET_SIGNATURE,
    STATEFUL_METADATA,
    TFLITE_METADATA_NAME,
    operator_names,
    state_input_name,
    state_output_name,
)
from keras_rnn.cells import cell
from keras_rnn.quiet import load_tensorflow, native_stderr_silenced
from keras_rnn.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Masking,
    Recurrent,
    Stacked,
    UnsupportedModelError,
    read_model,
)

QUANTIZE = tuple(QUANTIZE_MODES)  # None (float32), "dynamic", "float16", "int8"
SERVE_SIGNATURE = "serve"  # a stateful file's inference signature (beside RESET_SIGNATURE)
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
# A fixed-shape file whose largest activation (batch x steps x widest layer) is beyond this
# many floats would be gigabytes of buffers on a device: refused (about 256 MiB of float32).
MAX_ACTIVATION_ELEMENTS = 64 * 1024 * 1024


class TFLiteConversionError(ValueError):
    """The model could not be converted to builtin-only TFLite."""


def export_tflite(
    model,
    path,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    quantize: str | None = None,
    representative_data=None,
    metadata: dict | None = None,
    form: str = "auto",
) -> Path:
    """Exports a Keras RNN model to a builtin-only `.tflite` file.

    Args:
        model: a built Keras model: any graph the TFLite converter converts with builtin ops
            (Sequential, functional, several inputs and outputs).
        path: the `.tflite` file to write; written atomically (no partial file on failure).
        batch_size: the fixed batch of the exported input: by default 1, or the model's own
            batch when it has stateful layers (their state is one row per batch row).
        seq_len: the fixed number of steps; defaults to the model's own time length, and is
            required when the model accepts any length; a dict by input name for a model
            whose inputs have different lengths.
        quantize: None (float32), `"dynamic"` (int8 weights), `"float16"` (float16 weights)
            or `"int8"` (full integer; needs `representative_data`).
        representative_data: for int8: inputs shaped like the model's, `(n, seq_len,
            features)` or `(n, seq_len)` ids, e.g. the training data.
        metadata: string key/values stored in the flatbuffer's `keras_rnn` metadata entry
            (read back with `export.runtime.read_metadata`).
        form: how the time loop is written (see `FORMS` and `choose_form`): `"auto"` (the
            fastest measured form for the model), `"unrolled"`, `"while"` or `"fused"`.

    Returns:
        The written path. The file's inputs have the fixed batch and length, e.g.
        `(batch_size, seq_len, features)` float32 or `(batch_size, seq_len)` int32 ids; a model
        with one input and one output has `inputs` / `outputs`, others keep their own names.

    A model with `stateful=True` layers gets a file that keeps their state between calls in
    resource variables, as Keras keeps it between calls of the model: it starts from zeros
    (a reset state, whatever the Keras model holds at export). Its "reset" signature sets the
    state to its inputs `state_0`, `state_1`, ... (the layout is in the `stateful_states`
    metadata): zeros reset it as `layer.reset_state()` does in Keras
    (`export.runtime`'s `reset_states()` does that).
    """
    path = check_writable(path, suffix=".tflite")
    data = build_tflite(
        model,
        batch_size=batch_size,
        seq_len=seq_len,
        quantize=quantize,
        representative_data=representative_data,
        metadata=metadata,
        form=form,
    )
    return write_atomic(path, data)


def build_tflite(
    model,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    quantize: str | None = None,
    representative_data=None,
    metadata: dict | None = None,
    form: str = "auto",
) -> bytes:
    """The `.tflite` flatbuffer bytes for `model` (see `export_tflite`)."""
    mode = get_quantize_mode(quantize)
    check_exportable(model)
    stateful = stateful_layers(model)
    batch_size = _batch_size(batch_size, model, stateful)
    if form == "fused" and stateful:
        raise ValueError(
            f"form='fused' cannot keep the state of the stateful layers "
            f"{[layer.name for layer in stateful]} (the tf-keras rebuild it needs drops it): use "
            "'unrolled' or 'while'.")
    specs = input_specs(model)
    recurrent = [description for description in map(describe_recurrent, all_layers(model))
                 if description is not None]
    lengths = seq_len if isinstance(seq_len, dict) else {  # the inputs of free length
        name: seq_len for name, shape, _ in specs if len(shape) > 1 and shape[1] is None}
    if not isinstance(seq_len, dict) and not lengths:
        lengths = {specs[0][0]: seq_len}  # checked against the model's own length
    unknown = sorted(set(lengths) - {name for name, _, _ in specs})
    if unknown:
        raise ValueError(f"seq_len names inputs {unknown} the model does not have; its inputs: "
                         f"{[name for name, _, _ in specs]}.")
    seq_len = max((length for length in lengths.values() if length is not None), default=None)
    own = _own_seq_len(specs)
    form = choose_form(recurrent, seq_len if seq_len is not None else own, form, quantize)
    fixed = []
    for name, shape, dtype in specs:
        length = _resolve_seq_len(
            shape[1] if len(shape) > 1 else None, lengths.get(name),
            unrolled=form == "unrolled" and bool(recurrent),
            needed=len(shape) > 1 and shape[1] is None, name=name)
        fixed.append((name, _fixed_shape(name, shape, batch_size, length), dtype))
    seq_len = max((shape[1] for _, shape, _ in fixed if len(shape) > 1), default=None)
    _check_activation_size(fixed, recurrent, batch_size, seq_len)
    if mode.needs_calibration and representative_data is None:
        raise ValueError(
            f"quantize={quantize!r} needs representative_data: a few inputs shaped like the "
            "model's "
            "(the training data is a good choice) to calibrate the integer ranges."
        )
    calibration = (_calibration_batches(fixed, representative_data, batch_size,
                                        signature=SERVE_SIGNATURE if stateful else None)
                   if mode.needs_calibration else None)
    layer_names = [layer.name for layer in all_layers(model)]
    tf = load_tensorflow()
    if stateful:
        graph = clone_with(model, unrolled_stand_in) if form == "unrolled" else model
        converter = _stateful_converter(graph, model, [
            tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in fixed])
    elif form == "fused":
        structure = read_model(model)  # the tf-keras rebuild takes single chains
        converter = tf.lite.TFLiteConverter.from_keras_model(
            _fixed_shape_model(model, structure, batch_size, seq_len))
    else:
        # "while": the model as Keras computes it, the converter writing each recurrent layer
        # as a WHILE loop; "unrolled": the built-in recurrent layers written out step by step
        graph = clone_with(model, unrolled_stand_in) if form == "unrolled" else model
        names = output_names(model)
        signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in fixed]
        frozen = frozen_inference(graph, model, signature)
        converter = frozen_converter(frozen, signature, names)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    mode.configure(converter, tf, calibration)
    with states_reset(model):  # the file starts from a reset state
        flatbuffer = convert(converter, layer_names)
    if form == "fused" and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in operator_names(flatbuffer):
        raise TFLiteConversionError(
            "The converter did not fuse this model's LSTM layers (it fuses unmasked LSTMs "
            "only): use form='unrolled' or form='while'."
        )
    forms = recurrent_forms(model, FORM_NAMES[form])
    metadata = {**(metadata or {}), FORMS_METADATA: json.dumps(forms)}
    if stateful:
        # (every stateful layer's state lives in the file; the layout lists the built-in ones)
        metadata[STATEFUL_METADATA] = json.dumps(state_layout(model, every=True))
    return add_metadata(flatbuffer, metadata,
                        # the tf-keras rebuild names its tensors after its own layers
                        signature_names=(SINGLE_INPUT_NAME, SINGLE_OUTPUT_NAME)
                        if form == "fused" else None)


def _batch_size(batch_size, model, stateful) -> int:
    """The file's fixed batch: a stateful model's own (its state has one row per batch row)."""
    own = stateful_batch(model)
    if batch_size is None:
        return own or 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if own is not None and batch_size != own:
        raise ValueError(
            f"`batch_size` is {batch_size} but the stateful layers "
            f"{[layer.name for layer in stateful]} keep a state for batches of {own}: export "
            f"with batch_size={own} (or leave it out).")
    return batch_size


def _stateful_converter(graph, model, signature):
    """The converter for a model with stateful layers: the state variables stay variables
    (READ_VARIABLE/ASSIGN_VARIABLE, builtins), read at the start of a call and assigned at
    its end, so LiteRT carries them from one invoke to the next as Keras does; a "reset"
    signature sets them (to zeros, or to a state kept earlier). The weights are not frozen
    here (that would freeze the state with them): the converter freezes every variable that
    is only read."""
    import tensorflow as tf

    variables = [variable for layer in stateful_layers(model)
                 for variable in state_variables(layer)]
    serve = named_inference(graph, model)
    serve.__name__ = SERVE_SIGNATURE  # the converter names each signature after its function

    def reset(*states):
        for variable, state in zip(variables, states):
            variable.assign(state)
        return {state_output_name(index): variable.value.read_value()
                for index, variable in enumerate(variables)}

    reset.__name__ = RESET_SIGNATURE

    holder = tf.Module()  # owns every variable, so the converter can freeze or keep each
    # (Keras does not list a layer's state variables among the model's variables)
    holder.variables_ = [variable.value for variable in list(model.variables) + variables]
    holder.serve = tf.function(serve, input_signature=signature, autograph=False)
    # "reset" sets the state to its inputs: zeros to reset, as layer.reset_state() does, or a
    # state saved earlier (LiteRT's own interpreter refuses a signature without inputs)
    holder.reset = tf.function(reset, autograph=False, input_signature=[
        tf.TensorSpec(variable.shape, variable.dtype, name=state_input_name(index))
        for index, variable in enumerate(variables)])
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.serve.get_concrete_function(), holder.reset.get_concrete_function()], holder)


def choose_form(recurrent, seq_len, form: str = "auto", quantize=None) -> str:
    """The time-loop form of the .tflite file, for a model whose recurrent layers are
    `recurrent` (their `Recurrent`/`Bidirectional` descriptions).

    - `"unrolled"`: every step written out (FULLY_CONNECTED + element-wise ops). Fastest in
      `benchmarks/latency.py` for every cell at the lecture and medium sizes (LSTM included:
      1.3-1.5x the ONNX Runtime floor at 50 steps, hidden 128, against 2.1-2.2x for the fused
      op), and what full-int8 calibration handles. Up to `MAX_UNROLLED_STEPS` steps.
    - `"while"`: the converter's own WHILE loop over one step; any length, a small file.
    - `"fused"`: `UNIDIRECTIONAL_SEQUENCE_LSTM`, the converter's fused LSTM kernel, which it
      emits only for models built with tf-keras (Keras 2); LSTM models only (TFLite has no
      fused GRU, and leaves a tf-keras SimpleRNN as a WHILE loop).

    `"auto"` picks "unrolled" up to `MAX_AUTO_UNROLLED_CELL_STEPS` cell steps (steps times
    the recurrent directions of every layer: what the export's time and memory grow with) and
    "while" beyond; int8 always unrolls (refused past `MAX_UNROLLED_STEPS`). It never
    picks "fused": the fused LSTM keeps its state in variable tensors that LiteRT carries from
    one `invoke()` to the next, so a plain interpreter gives a wrong answer from the second
    call on unless it calls `reset_all_variables()` first (`export.runtime` does).
    """
    if form not in FORMS:
        raise ValueError(f"Unknown form {form!r}: expected one of {FORMS}.")
    cells = {run.cell for layer in recurrent for run in cell_runs(layer)}
    calibrated = get_quantize_mode(quantize).needs_calibration
    if form == "auto":
        directions = sum(len(cell_runs(layer)) for layer in recurrent)
        if (seq_len is None or seq_len * directions <= MAX_AUTO_UNROLLED_CELL_STEPS
                or calibrated):
            return "unrolled"  # (too long for int8: refused by _resolve_seq_len with advice)
        return "while"
    if form == "fused" and cells != {"lstm"}:
        raise ValueError(
            f"form='fused' needs LSTM layers only (UNIDIRECTIONAL_SEQUENCE_LSTM); this model "
            f"has {sorted(cells)}. TFLite has no fused GRU or SimpleRNN kernel: use 'unrolled' "
            "or 'while'."
        )
    if form in ("while", "fused") and calibrated:
        raise ValueError(
            f"quantize={quantize!r} cannot calibrate the {form!r} form here (the calibrator crashes "
            "the process on TFLite WHILE loops, TensorFlow issue 75140): use form='unrolled'."
        )
    return form


def _fixed_shape_model(model, structure, batch_size: int, seq_len: int):
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


def _own_seq_len(specs):
    """The model's fixed time length (axis 1 of its sequence inputs), or None if any
    sequence input takes any length."""
    lengths = {shape[1] for _, shape, _ in specs if len(shape) > 1}
    return None if None in lengths or len(lengths) != 1 else lengths.pop()


def _resolve_seq_len(own, seq_len, *, unrolled: bool, needed: bool, name: str = "inputs"):
    if seq_len is None:
        if needed:
            raise ValueError(
                f"Input {name!r} accepts sequences of any length, but a .tflite file has a "
                "fixed input shape: pass seq_len=N (the number of steps the device will "
                "feed; a dict by input name for inputs of different lengths)."
            )
        return own
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"`seq_len` must be a positive integer, got {seq_len!r}.")
    if own is not None and own != seq_len:
        raise ValueError(f"The model's time length is fixed at {own}; got seq_len={seq_len}.")
    if unrolled and seq_len > MAX_UNROLLED_STEPS:
        raise ValueError(
            f"seq_len={seq_len} is more than {MAX_UNROLLED_STEPS} steps to unroll: use "
            "form='while' (or 'fused' for LSTM models), or export a streaming step model "
            "(export.streaming) and feed the sequence step by step."
        )
    return seq_len


def _fixed_shape(name: str, shape: tuple, batch_size: int, seq_len) -> tuple:
    """An input's shape in the file: the batch fixed, a free time axis set to seq_len."""
    fixed = [batch_size]
    for axis, size in enumerate(shape[1:], start=1):
        if size is None and axis == 1 and seq_len is not None:
            size = seq_len
        if size is None:
            raise ValueError(
                f"Input {name!r} has shape {shape} with a free axis {axis}; a .tflite file "
                "needs every axis but the batch fixed: build the model with that size in "
                "keras.Input(shape=...).")
        fixed.append(int(size))
    return tuple(fixed)


def _check_activation_size(fixed, recurrent, batch_size: int, seq_len) -> None:
    sizes = [int(np.prod(shape)) for _, shape, _ in fixed]
    units = [layer.units for layer in recurrent]
    if units and seq_len:
        sizes.append(batch_size * seq_len * max(units))
    if max(sizes) > MAX_ACTIVATION_ELEMENTS:
        raise ValueError(
            f"batch_size={batch_size} with seq_len={seq_len} makes activations of "
            f"{max(sizes):,} values per activation, over the {MAX_ACTIVATION_ELEMENTS:,} a "
            "fixed-shape .tflite file is allowed here: export a smaller batch (the device can "
            "run the file several times) or a streaming step model (export.streaming).")


def _calibration_batches(fixed, data, batch_size: int, signature=None):
    """Checks the int8 calibration data (an array for one input; a list in input order or a
    dict by input name for several), then yields it in the file's fixed batches. Every check
    runs before conversion: the converter's calibrator ends the whole process (segfault) on
    non-finite ranges instead of raising."""
    names = [name for name, _, _ in fixed]
    if isinstance(data, dict):
        missing = sorted(set(names) - set(data))
        if missing:
            raise ValueError(f"representative_data lacks inputs {missing}; it has {sorted(data)}.")
        arrays = [data[name] for name in names]
    elif len(fixed) > 1:
        if not isinstance(data, (list, tuple)) or len(data) != len(fixed):
            raise ValueError(f"representative_data must hold one array per input {names}, as a "
                             "list in that order or a dict by name.")
        arrays = list(data)
    else:
        arrays = [data]
    checked = []
    for (name, shape, dtype), array in zip(fixed, arrays):
        array = np.asarray(array)
        label = "representative_data" + (f"[{name!r}]" if len(fixed) > 1 else "")
        expected = shape[1:]
        if array.ndim != len(shape) or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{label} has shape {array.shape}; expected (n, "
                f"{', '.join(map(str, expected))}) matching the exported input.")
        if len(array) == 0:
            raise ValueError(f"{label} has shape {array.shape}: no rows to calibrate on.")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{label} holds {array.dtype} values; expected numbers.")
        integer = np.dtype(dtype).kind in "iu"
        if integer and array.dtype.kind == "f":
            raise ValueError(f"{label} must be integer token ids for this model; got "
                             f"{array.dtype} values.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise ValueError(
                f"{label} holds {bad} NaN or infinite values; int8 ranges need finite "
                "calibration data. Remove or replace those values.")
        if integer and array.min() < 0:
            raise ValueError(f"{label} holds negative ids ({array.min()}); ids start at 0.")
        checked.append(array.astype(dtype))
    if len({len(array) for array in checked}) != 1:
        raise ValueError("representative_data has a different number of rows per input: "
                         f"{[len(array) for array in checked]}.")

    def batches():  # by input name: the converter orders a signature's inputs its own way
        for start in range(0, len(checked[0]), batch_size):
            chunks = {}
            for name, array in zip(names, checked):
                chunk = array[start:start + batch_size]
                if len(chunk) < batch_size:  # repeat rows to fill the fixed batch
                    chunk = np.resize(chunk, (batch_size,) + chunk.shape[1:])
                chunks[name] = chunk
            yield chunks if signature is None else (signature, chunks)

    return batches


# -- the TensorFlow graph ----------------------------------------------------------------------

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
    """The bias added to the input projection (a GRU with reset_after keeps a second,
    recurrent one: its bias is (2, 3 * units))."""
    return layer.bias[0] if layer.bias.ndim == 2 else layer.bias


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
    half = len(initial_state) // 2
    forward, forward_states = unrolled_recurrent(description.forward, values, mask,
                                         initial_state[:half] or None, return_state=True)
    backward, backward_states = unrolled_recurrent(description.backward, values, mask,
                                           initial_state[half:] or None, return_state=True)
    if description.return_sequences:
        backward = tf.reverse(backward, axis=[1])
    if description.merge_mode == "concat":
        outputs = tf.concat([forward, backward], axis=-1)
    elif description.merge_mode == "sum":
        outputs = forward + backward
    elif description.merge_mode == "ave":
        outputs = (forward + backward) * 0.5
    else:
        outputs = forward * backward
    return [outputs] + forward_states + backward_states if return_state else outputs


def unrolled_stand_in(original, description):
    """The TFLite stand-in of a built-in recurrent layer (see `export.graph`)."""
    return UnrolledRecurrent(original, description)


class UnrolledRecurrent(RecurrentStandIn):
    """The layer's time loop written out step by step from its trained weights: one
    FULLY_CONNECTED for every step's input projection at once, then per step the
    recurrent matmul and element-wise builtins; a SELECT per step where a mask is."""

    def call(self, inputs, mask=None, initial_state=None, training=None):
        inputs = self.with_known_shape(inputs)
        states = self.kept_states()
        if not states:
            return run_recurrent(self.description, inputs, mask, initial_state,
                                 self.return_state)
        # stateful=True: start from the kept state (unless given one, as Keras does) and
        # keep the final state for the next call
        if initial_state is None:
            initial_state = [variable.value for variable in states]
        results = run_recurrent(self.description, inputs, mask, initial_state, True)
        for variable, state in zip(states, results[1:]):
            variable.assign(state)
        return results if self.return_state else results[0]

    def run_with_states(self, inputs, states):
        """One run from `states`, returning `[outputs] + final states` (step models)."""
        return run_recurrent(self.description, self.with_known_shape(inputs), None,
                             states, True)


def frozen_converter(frozen, signature, names):
    """The TFLite converter (builtin ops) for a traced function (frozen, or of constants only)
    returning a dict of outputs `names`, handed over with a trackable owner: the converter's
    current path, which writes a signature with the inputs' and outputs' names."""
    import tensorflow as tf

    def named(*inputs):  # the frozen function's outputs under their names again
        results = frozen(*inputs)
        if isinstance(results, dict):
            return results
        return dict(zip(sorted(names), tf.nest.flatten(results)))  # dicts flatten sorted

    holder = tf.Module()
    holder.function = tf.function(named, autograph=False, input_signature=signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.function.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert_function(function, input_signature, structure) -> bytes:
    """Converts a Python function of TF ops returning a dict of named outputs to
    builtin-only TFLite, keeping a signature with the named inputs and outputs (multi-input
    files such as step models need the names)."""
    return convert(frozen_converter(function, input_signature, ()),
                   [layer.name for layer in structure.layers])


def convert(converter, layer_names) -> bytes:
    """Runs the converter without its terminal output (its settings printed from C++, the
    SavedModel summary of `from_keras_model`, the int8 statistics warning), then refuses any
    Flex or custom op in the result."""
    try:
        with (native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()),
              warnings.catch_warnings()):
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            # the int8 calibrator runs TensorFlow's own (deprecated) interpreter internally
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is")
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError and others
        raise TFLiteConversionError(_explain_conversion_error(error, layer_names)) from error
    check_builtin_only(flatbuffer, layer_names)
    return flatbuffer


# -- checking and annotating the flatbuffer ----------------------------------------------------

def _explain_conversion_error(error, layer_names) -> str:
    text = str(error)
    culprits = [name for name in layer_names if f"{name}/" in text]
    where = f" in layer {culprits[0]!r}" if culprits else ""
    first_line = next((line for line in text.splitlines() if "error" in line.lower()), text[:300])
    return (
        f"TFLite conversion failed{where}: {first_line.strip()} "
        "The exporter uses TFLite builtin ops only and never falls back to Flex (TensorFlow) "
        "ops, which the standalone LiteRT interpreter cannot run."
    )


def check_builtin_only(flatbuffer: bytes, layer_names=None) -> None:
    """Raises TFLiteConversionError if the file holds any Flex or custom op."""
    foreign = [name for name in operator_names(flatbuffer) if name.startswith("custom:")]
    if foreign:
        layers = ""
        if layer_names:
            layers = f" (model layers: {list(layer_names)})"
        raise TFLiteConversionError(
            f"The converted model needs non-builtin ops {foreign}{layers}; the standalone "
            "LiteRT interpreter cannot run Flex or custom ops, so no file was written."
        )


def add_metadata(flatbuffer: bytes, metadata: dict, *, signature_names=None) -> bytes:
    """Stores `metadata` (string key/values, as JSON) in a `keras_rnn` flatbuffer entry;
    `signature_names=(input, output)` renames a single-input, single-output signature."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    if signature_names and model.signatureDefs:
        signature = model.signatureDefs[0]
        signature.inputs[0].name, signature.outputs[0].name = signature_names
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(
        json.dumps({str(k): str(v) for k, v in metadata.items()}, ensure_ascii=False).encode(),
        np.uint8,
    )
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
