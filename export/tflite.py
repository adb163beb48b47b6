"""Keras RNN -> a .tflite of TFLite builtin ops only, for the standalone LiteRT interpreter.

The obvious routes fail on Keras 3: `TFLiteConverter.from_keras_model` on a `None` batch or
time axis stops at `tf.TensorListReserve` (no static element shape), `model.export(
format="litert")` always enables SELECT_TF_OPS (Flex ops, refused by the standalone
interpreter), and `from_concrete_functions([fn], model)` gives NaN outputs. So the exporter
rebuilds the network from its trained weights (`keras_rnn.structure`) as a plain TensorFlow
function with the batch and sequence length fixed, the time loop unrolled: every step is a
FULLY_CONNECTED plus element-wise builtins. This form needs no cuDNN kernels (it does not
matter where the model was trained), keeps Keras's masking exactly (a SELECT per step), is the
fastest builtin form for short sequences, and is one the int8 calibrator handles (full-int8
calibration of a WHILE loop segfaults, TensorFlow issue 75140). `form=` also offers the
converter's WHILE loop and, for LSTMs, the fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel (see
`choose_form` for what "auto" picks and why).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from export.runtime import TFLITE_METADATA_NAME
from keras_rnn.quiet import load_tensorflow, native_stderr_silenced
from keras_rnn.structure import (
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Masking,
    Recurrent,
    read_model,
)

QUANTIZE = (None, "dynamic", "float16", "int8")
FORMS = ("auto", "unrolled", "while", "fused")
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
    batch_size: int = 1,
    seq_len: int | None = None,
    quantize: str | None = None,
    representative_data=None,
    metadata: dict | None = None,
    form: str = "auto",
) -> Path:
    """Exports a Keras RNN model to a builtin-only `.tflite` file.

    Args:
        model: a built Keras model of the supported layers (see `keras_rnn.structure`).
        path: the `.tflite` file to write; written atomically (no partial file on failure).
        batch_size: the fixed batch of the exported input (default 1).
        seq_len: the fixed number of steps; defaults to the model's own time length, and is
            required when the model accepts any length.
        quantize: None (float32), `"dynamic"` (int8 weights), `"float16"` (float16 weights)
            or `"int8"` (full integer; needs `representative_data`).
        representative_data: for int8: inputs shaped like the model's, `(n, seq_len,
            features)` or `(n, seq_len)` ids, e.g. the training data.
        metadata: string key/values stored in the flatbuffer's `keras_rnn` metadata entry
            (read back with `export.runtime.read_metadata`).
        form: how the time loop is written (see `FORMS` and `choose_form`): `"auto"` (the
            fastest measured form for the model), `"unrolled"`, `"while"` or `"fused"`.

    Returns:
        The written path. The file's input is `(batch_size, seq_len, features)` float32 or
        `(batch_size, seq_len)` int32 ids.
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
    batch_size: int = 1,
    seq_len: int | None = None,
    quantize: str | None = None,
    representative_data=None,
    metadata: dict | None = None,
    form: str = "auto",
) -> bytes:
    """The `.tflite` flatbuffer bytes for `model` (see `export_tflite`)."""
    structure = read_model(model)
    if quantize not in QUANTIZE:
        raise ValueError(f"Unknown quantize {quantize!r}: expected one of {QUANTIZE}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    form = choose_form(structure, seq_len if seq_len is not None else structure.seq_len, form,
                       quantize)
    seq_len = _resolve_seq_len(structure, seq_len, unrolled=form == "unrolled")
    _check_activation_size(structure, batch_size, seq_len)
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: a few inputs shaped like the model's "
            "(the training data is a good choice) to calibrate the integer ranges."
        )
    tf = load_tensorflow()
    if form == "unrolled":
        holder = tf.Module()  # a trackable owner: the converter's current, documented path
        holder.function = _inference_function(structure, batch_size, seq_len)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [holder.function.get_concrete_function()], holder)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(
            _fixed_shape_model(model, structure, batch_size, seq_len, form))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = _calibration_batches(
            structure, representative_data, batch_size, seq_len
        )
    flatbuffer = _convert(converter, structure)
    if form == "fused" and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in operator_names(flatbuffer):
        raise TFLiteConversionError(
            "The converter did not fuse this model's LSTM layers (it fuses unmasked LSTMs "
            "only): use form='unrolled' or form='while'."
        )
    if metadata:
        flatbuffer = add_metadata(flatbuffer, metadata)
    return flatbuffer


def choose_form(structure, seq_len, form: str = "auto", quantize=None) -> str:
    """The time-loop form of the .tflite file.

    - `"unrolled"`: every step written out (FULLY_CONNECTED + element-wise ops). Fastest in
      `benchmarks/latency.py` for every cell at the lecture and medium sizes (LSTM included:
      0.29 ms vs 0.43 ms for the fused op at 50 steps, hidden 128), and what full-int8
      calibration handles. Up to `MAX_UNROLLED_STEPS` steps.
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
    cells = {direction.cell for layer in structure.recurrent_layers
             for direction in ([layer.forward, layer.backward]
                               if isinstance(layer, Bidirectional) else [layer])}
    if form == "auto":
        directions = sum(2 if isinstance(layer, Bidirectional) else 1
                         for layer in structure.recurrent_layers)
        if (seq_len is None or seq_len * directions <= MAX_AUTO_UNROLLED_CELL_STEPS
                or quantize == "int8"):
            return "unrolled"  # (too long for int8: refused by _resolve_seq_len with advice)
        return "while"
    if form == "fused" and cells != {"lstm"}:
        raise ValueError(
            f"form='fused' needs LSTM layers only (UNIDIRECTIONAL_SEQUENCE_LSTM); this model "
            f"has {sorted(cells)}. TFLite has no fused GRU or SimpleRNN kernel: use 'unrolled' "
            "or 'while'."
        )
    if form in ("while", "fused") and quantize == "int8":
        raise ValueError(
            f"quantize='int8' cannot calibrate the {form!r} form here (the calibrator crashes "
            "the process on TFLite WHILE loops, TensorFlow issue 75140): use form='unrolled'."
        )
    return form


def _fixed_shape_model(model, structure, batch_size: int, seq_len: int, form: str):
    """The model rebuilt with a fixed input shape: in Keras 3 for the WHILE form, in tf-keras
    (weights copied) for the fused form."""
    shape = (seq_len,) if structure.takes_ids else (seq_len, structure.input_shape[2])
    if form == "while":
        import keras

        layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
        return keras.Sequential(
            [keras.Input(shape, batch_size=batch_size, dtype=structure.input_dtype)] + layers)
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


def _resolve_seq_len(structure, seq_len, *, unrolled: bool = True):
    own = structure.seq_len
    if seq_len is None:
        if own is None:
            raise ValueError(
                "The model accepts sequences of any length, but a .tflite file has a fixed "
                "input shape: pass seq_len=N (the number of steps the device will feed)."
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
            "(export.step) and feed the sequence step by step."
        )
    return seq_len


def _check_activation_size(structure, batch_size: int, seq_len: int) -> None:
    widths = [structure.input_shape[2] if not structure.takes_ids else 1]
    for layer in structure.layers:
        for name in ("units", "table", "kernel"):
            value = getattr(layer, name, None)
            if value is not None:
                widths.append(value if isinstance(value, int) else value.shape[-1])
    elements = batch_size * seq_len * max(widths)
    if elements > MAX_ACTIVATION_ELEMENTS:
        raise ValueError(
            f"batch_size={batch_size} x seq_len={seq_len} x {max(widths)} features is "
            f"{elements:,} values per activation, over the {MAX_ACTIVATION_ELEMENTS:,} a "
            "fixed-shape .tflite file is allowed here: export a smaller batch (the device can "
            "run the file several times) or a streaming step model (export.step).")


def _calibration_batches(structure, data, batch_size: int, seq_len: int):
    """Checks the int8 calibration data, then yields it in the file's fixed batches. Every
    check runs before conversion: the converter's calibrator ends the whole process
    (segfault) on non-finite ranges instead of raising."""
    data = np.asarray(data)
    expected = (seq_len,) if structure.takes_ids else (seq_len, structure.input_shape[2])
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected:
        raise ValueError(
            f"representative_data has shape {data.shape}; expected (n, "
            f"{', '.join(map(str, expected))}) matching the exported input."
        )
    if len(data) == 0:
        raise ValueError(f"representative_data has shape {data.shape}: no rows to calibrate on.")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"representative_data holds {data.dtype} values; expected numbers.")
    if structure.takes_ids and data.dtype.kind == "f":
        raise ValueError("representative_data must be integer token ids for this model; got "
                         f"{data.dtype} values.")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ValueError(
            f"representative_data holds {bad} NaN or infinite values; int8 ranges need finite "
            "calibration data. Remove or replace those values.")
    if structure.takes_ids:
        vocabulary = next(layer.table.shape[0] for layer in structure.layers
                          if isinstance(layer, Embedding))
        if data.min() < 0 or data.max() >= vocabulary:
            raise ValueError(
                f"representative_data holds ids from {data.min()} to {data.max()}; the model's "
                f"Embedding takes 0 to {vocabulary - 1}.")
    dtype = np.int32 if structure.takes_ids else np.float32

    def batches():
        for start in range(0, len(data), batch_size):
            chunk = data[start:start + batch_size]
            if len(chunk) < batch_size:  # repeat rows to fill the fixed batch
                chunk = np.resize(chunk, (batch_size,) + chunk.shape[1:])
            yield [chunk.astype(dtype)]

    return batches


# -- the TensorFlow graph ----------------------------------------------------------------------

def _inference_function(structure, batch_size: int, seq_len: int):
    import tensorflow as tf

    if structure.takes_ids:
        spec = tf.TensorSpec((batch_size, seq_len), tf.int32, name="inputs")
    else:
        spec = tf.TensorSpec((batch_size, seq_len, structure.input_shape[2]), tf.float32,
                             name="inputs")

    @tf.function(input_signature=[spec], autograph=False)
    def inference(inputs):
        return {"outputs": _forward(structure, inputs)}

    return inference


def _forward(structure, inputs):
    import tensorflow as tf

    values, mask = inputs, None
    for layer in structure.layers:
        with tf.name_scope(layer.name):
            if isinstance(layer, Embedding):
                mask = tf.not_equal(values, 0) if layer.mask_zero else None
                values = tf.gather(tf.constant(layer.table), values)
            elif isinstance(layer, Masking):
                mask = tf.reduce_any(tf.not_equal(values, layer.mask_value), axis=-1)
                values = values * tf.cast(mask, tf.float32)[..., None]
            elif isinstance(layer, Recurrent):
                values = _recurrent(layer, values, mask)
                mask = mask if layer.return_sequences else None
            elif isinstance(layer, Bidirectional):
                values = _bidirectional(layer, values, mask)
                mask = mask if layer.return_sequences else None
            elif isinstance(layer, Dense):
                values = _activation(layer.activation, _dense(values, layer.kernel, layer.bias))
            elif isinstance(layer, Activation):
                values = _activation(layer.activation, values)
    return values


def _dense(values, kernel, bias):
    """x @ kernel + bias as one 2-D FULLY_CONNECTED, for any leading shape."""
    import tensorflow as tf

    shape = values.shape
    flat = tf.reshape(values, [-1, shape[-1]])
    result = tf.matmul(flat, tf.constant(kernel)) + tf.constant(bias)
    return tf.reshape(result, list(shape[:-1]) + [kernel.shape[1]])


def _activation(name: str, values):
    import tensorflow as tf

    if name == "linear":
        return values
    if name == "hard_sigmoid":
        return tf.clip_by_value(values / 6.0 + 0.5, 0.0, 1.0)
    return {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu,
            "softmax": tf.nn.softmax}[name](values)


def _recurrent(layer: Recurrent, values, mask, initial_state=None, *, return_state=False):
    """The layer's time loop, unrolled; same masking rules as Keras (see reference.py).

    `initial_state` is `[h]` (`[h, c]` for LSTM), zeros by default; with `return_state` the
    final states follow the outputs, as Keras's `return_state=True` gives them."""
    import tensorflow as tf

    batch, timesteps = values.shape[0], values.shape[1]
    units = layer.units
    # All input projections at once: (batch, time, gates * units)
    projected = tf.unstack(_dense(values, layer.kernel, _input_bias(layer)), axis=1)
    mask_steps = tf.unstack(mask, axis=1) if mask is not None else None
    zeros = tf.zeros((batch, units), tf.float32)
    h, c = (list(initial_state) + [zeros])[:2] if initial_state else (zeros, zeros)
    output = zeros
    outputs = []
    order = range(timesteps - 1, -1, -1) if layer.go_backwards else range(timesteps)
    # One constant per weight however many steps use it: a constant made inside the loop is
    # copied into the graph once per step (a 512-unit LSTM at 1000 steps: 4 GB of GraphDef).
    weights = _recurrent_constants(layer)
    for t in order:
        new_h, new_c = _cell_step(layer, projected[t], h, c, weights)
        if mask_steps is None:
            output, h, c = new_h, new_h, new_c
        else:
            keep = tf.broadcast_to(mask_steps[t][:, None], (batch, units))
            output = tf.where(keep, new_h, zeros if layer.zero_output_for_mask else output)
            h = tf.where(keep, new_h, h)
            c = tf.where(keep, new_c, c)
        outputs.append(output)
    result = tf.stack(outputs, axis=1) if layer.return_sequences else outputs[-1]
    if return_state:
        return result, ([h, c] if layer.cell == "lstm" else [h])
    return result


def _input_bias(layer: Recurrent):
    """The bias added to the input projection (GRU reset_after keeps a second, recurrent one)."""
    return layer.bias[0] if layer.cell == "gru" and layer.reset_after else layer.bias


def _recurrent_constants(layer: Recurrent) -> dict:
    """The recurrent weights of one layer as TF constants, made once and shared by every step."""
    import tensorflow as tf

    units = layer.units
    if layer.cell == "gru" and not layer.reset_after:
        # the candidate's recurrent matmul runs on r * h, after the gates: two matrices
        return {"gates": tf.constant(layer.recurrent_kernel[:, : 2 * units]),
                "candidate": tf.constant(layer.recurrent_kernel[:, 2 * units:])}
    weights = {"kernel": tf.constant(layer.recurrent_kernel)}
    if layer.cell == "gru":
        weights["bias"] = tf.constant(layer.bias[1])
    return weights


def _cell_step(layer: Recurrent, x_t, h, c, weights: dict | None = None):
    """One step of the cell from the projected input `x_t = x @ kernel + input bias`:
    returns the new `(h, c)` (`c` passes through unchanged for SimpleRNN and GRU).
    `weights`: the layer's `_recurrent_constants`, shared across steps."""
    import tensorflow as tf

    weights = weights or _recurrent_constants(layer)
    act = lambda x: _activation(layer.activation, x)  # noqa: E731
    gate = lambda x: _activation(layer.recurrent_activation, x)  # noqa: E731
    if layer.cell == "simple_rnn":
        return act(x_t + tf.matmul(h, weights["kernel"])), c
    if layer.cell == "lstm":
        z = x_t + tf.matmul(h, weights["kernel"])  # (batch, 4 * units)
        i, f, g, o = tf.split(z, 4, axis=1)
        new_c = gate(f) * c + gate(i) * act(g)
        return gate(o) * act(new_c), new_c
    x_z, x_r, x_h = tf.split(x_t, 3, axis=1)
    if layer.reset_after:
        inner = tf.matmul(h, weights["kernel"]) + weights["bias"]  # (batch, 3 * units)
        h_z, h_r, h_h = tf.split(inner, 3, axis=1)
        z, r = gate(x_z + h_z), gate(x_r + h_r)
        candidate = act(x_h + r * h_h)
    else:
        h_z, h_r = tf.split(tf.matmul(h, weights["gates"]), 2, axis=1)
        z, r = gate(x_z + h_z), gate(x_r + h_r)
        candidate = act(x_h + tf.matmul(r * h, weights["candidate"]))
    return z * h + (1.0 - z) * candidate, c


def _bidirectional(layer: Bidirectional, values, mask):
    import tensorflow as tf

    forward = _recurrent(layer.forward, values, mask)
    backward = _recurrent(layer.backward, values, mask)
    if layer.return_sequences:
        backward = tf.reverse(backward, axis=[1])
    if layer.merge_mode == "concat":
        return tf.concat([forward, backward], axis=-1)
    if layer.merge_mode == "sum":
        return forward + backward
    if layer.merge_mode == "ave":
        return (forward + backward) * 0.5
    return forward * backward


def convert_function(function, input_signature, structure) -> bytes:
    """Converts a Python function of TF ops to builtin-only TFLite, keeping a signature with
    the named inputs and outputs (multi-input files such as step models need the names)."""
    import tensorflow as tf

    holder = tf.Module()  # a trackable owner: the converter then writes the signature
    holder.function = tf.function(function, input_signature=input_signature, autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.function.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return _convert(converter, structure)


def _convert(converter, structure) -> bytes:
    """Runs the converter without its terminal output (its settings printed from C++, the
    SavedModel summary of `from_keras_model`, the int8 statistics warning), then refuses any
    Flex or custom op in the result."""
    try:
        with (native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()),
              warnings.catch_warnings()):
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError and others
        raise TFLiteConversionError(_explain_conversion_error(error, structure)) from error
    check_builtin_only(flatbuffer, structure)
    return flatbuffer


# -- checking and annotating the flatbuffer ----------------------------------------------------

def _explain_conversion_error(error, structure) -> str:
    text = str(error)
    layer_names = [layer.name for layer in structure.layers]
    culprits = [name for name in layer_names if f"{name}/" in text]
    where = f" in layer {culprits[0]!r}" if culprits else ""
    first_line = next((line for line in text.splitlines() if "error" in line.lower()), text[:300])
    return (
        f"TFLite conversion failed{where}: {first_line.strip()} "
        "The exporter uses TFLite builtin ops only and never falls back to Flex (TensorFlow) "
        "ops, which the standalone LiteRT interpreter cannot run."
    )


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes a .tflite file uses: builtin names, or `custom:NAME` (Flex ops are
    custom ops named `Flex...`). Reads the flatbuffer with LiteRT's schema, no TensorFlow."""
    from ai_edge_litert import schema_py_generated as schema

    builtin_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append(f"custom:{code.CustomCode().decode()}")
        else:
            names.append(builtin_names.get(builtin, f"builtin:{builtin}"))
    return names


def check_builtin_only(flatbuffer: bytes, structure=None) -> None:
    """Raises TFLiteConversionError if the file holds any Flex or custom op."""
    foreign = [name for name in operator_names(flatbuffer) if name.startswith("custom:")]
    if foreign:
        layers = ""
        if structure is not None:
            layers = f" (model layers: {[layer.name for layer in structure.layers]})"
        raise TFLiteConversionError(
            f"The converted model needs non-builtin ops {foreign}{layers}; the standalone "
            "LiteRT interpreter cannot run Flex or custom ops, so no file was written."
        )


def add_metadata(flatbuffer: bytes, metadata: dict) -> bytes:
    """Stores `metadata` (string key/values, as JSON) in a `keras_rnn` flatbuffer entry."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
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
