"""Keras model -> a .tflite of TFLite builtin ops only, for the standalone LiteRT interpreter.

`export.model.rebuild` rebuilds the model with each built-in recurrent layer as a stand-in
(`export.tflite.forms`: the time loop unrolled, by default), the whole graph, batch and lengths
fixed, goes through the TFLite converter with builtin ops only (Keras's own
`model.export(format="litert")` enables Flex ops, which the standalone interpreter refuses),
and the flatbuffer's operator list is read back to refuse any Flex or custom op
(`export.tflite.flatbuffer`). Quantized files are calibrated by `export.tflite.quantize`.
Models with `stateful=True` layers keep their state in the file between calls.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np

from export._files import check_writable, write_atomic
from export.formats import get_quantize_mode
from export.model.layers import all_layers, recurrent_descriptions, recurrent_forms
from export.model.rebuild import clone_with, for_export
from export.model.signature import (
    IDS_ADVICE,
    SINGLE_INPUT_NAME,
    SINGLE_OUTPUT_NAME,
    check_exportable,
    frozen_inference,
    input_specs,
    named_inference,
    output_names,
    string_inputs,
    strings_read,
)
from export.model.state import state_layout, state_variables, stateful_batch, stateful_layers, states_reset
from export.runtime import (
    FORMS_METADATA,
    RESET_SIGNATURE,
    STATEFUL_METADATA,
    operator_names,
    state_input_name,
    state_output_name,
)
from export.tflite.flatbuffer import TFLiteConversionError, add_metadata, convert, frozen_converter
from export.tflite.forms import (
    FORM_NAMES,
    MAX_UNROLLED_STEPS,
    choose_form,
    fixed_shape_model,
    unrolled_stand_in,
)
from export.tflite.quantize import calibration_batches, loops_calibrated
from keras_rnn.quiet import load_tensorflow
from keras_rnn.structure import UnsupportedModelError, read_model

SERVE_SIGNATURE = "serve"  # a stateful file's inference signature (beside RESET_SIGNATURE)
# A fixed-shape file whose largest activation (batch x steps x widest layer) is beyond this
# many floats would be gigabytes of buffers on a device: refused (about 256 MiB of float32).
MAX_ACTIVATION_ELEMENTS = 64 * 1024 * 1024


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


@for_export
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
    check_exportable(model, strings=True)
    strings = string_inputs(model)
    stateful = stateful_layers(model)
    if strings and (mode.needs_calibration or form == "fused"):
        raise UnsupportedModelError(
            f"{strings_read(model, strings)}: "
            + ("quantize='int8' calibrates numbers only; use quantize='dynamic' or "
               "'float16', or quantize the model from the ids on." if mode.needs_calibration
               else "form='fused' rebuilds numeric chains only; use 'unrolled' or 'while'."))
    batch_size = _batch_size(batch_size, model, stateful)
    if form == "fused" and stateful:
        raise ValueError(
            f"form='fused' cannot keep the state of the stateful layers "
            f"{[layer.name for layer in stateful]} (the tf-keras rebuild it needs drops it): use "
            "'unrolled' or 'while'.")
    specs = input_specs(model)
    recurrent = recurrent_descriptions(model)
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
    form = choose_form(recurrent, seq_len if seq_len is not None else own, form, quantize,
                       stateful=bool(stateful))
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
    calibration = (calibration_batches(fixed, representative_data, batch_size,
                                        signature=SERVE_SIGNATURE if stateful else None)
                   if mode.needs_calibration else None)
    if calibration is not None and form == "fused":  # the tf-keras rebuild has its own input
        by_name = calibration  # names: fed by position

        def calibration():
            return ([chunks[name] for name, _, _ in fixed] for chunks in by_name())
    layer_names = [layer.name for layer in all_layers(model)]
    tf = load_tensorflow()
    graph = None  # the rebuilt model traced (for the forms its subclassed models' layers got)
    if stateful:
        graph = clone_with(model, unrolled_stand_in) if form == "unrolled" else model
        converter = _stateful_converter(graph, model, [
            tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in fixed],
            tables=bool(strings))
    elif form == "fused":
        structure = read_model(model)  # the tf-keras rebuild takes single chains
        converter = tf.lite.TFLiteConverter.from_keras_model(
            fixed_shape_model(model, structure, batch_size, seq_len))
    else:
        # "while": the model as Keras computes it, the converter writing each recurrent layer
        # as a WHILE loop; "unrolled": the built-in recurrent layers written out step by step
        graph = clone_with(model, unrolled_stand_in) if form == "unrolled" else model
        names = output_names(model)
        signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in fixed]
        if strings:  # (the lookup tables stay tables: see frozen_converter)
            converter = frozen_converter(named_inference(graph, model), signature, names,
                                         owners=[graph, model])
        else:
            converter = frozen_converter(frozen_inference(graph, model, signature), signature,
                                         names)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    mode.configure(converter, tf, calibration)
    # (the converter's calibrator crashes on WHILE loops: calibrated by export.tflite.quantize)
    loops = loops_calibrated() if mode.needs_calibration else contextlib.nullcontext()
    with states_reset(model), loops:  # the file starts from a reset state
        try:
            flatbuffer = convert(converter, layer_names)
        except TFLiteConversionError as error:
            if not strings:
                raise
            raise _string_refusal(error, strings, model) from error
    if form == "fused" and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in operator_names(flatbuffer):
        raise TFLiteConversionError(
            "The converter did not fuse this model's LSTM layers (it fuses unmasked LSTMs "
            "only): use form='unrolled' or form='while'."
        )
    forms = recurrent_forms(model, FORM_NAMES[form], graph)
    metadata = {**(metadata or {}), FORMS_METADATA: json.dumps(forms)}
    if stateful:
        # (every stateful layer's state lives in the file; the layout lists the built-in ones)
        metadata[STATEFUL_METADATA] = json.dumps(state_layout(model, every=True))
    return add_metadata(flatbuffer, metadata, lean=mode.name == "int8",  # (microcontrollers)
                        io_names=None if stateful else ([name for name, _, _ in fixed],
                                                        output_names(model)),
                        # the tf-keras rebuild names its tensors after its own layers
                        signature_names=(SINGLE_INPUT_NAME, SINGLE_OUTPUT_NAME)
                        if form == "fused" else None)


def _string_refusal(error, strings, model) -> TFLiteConversionError:
    """A model reading strings that the converter could not write with builtins: the string
    layers, the ops they need, and what a file can hold instead."""
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", str(error.__cause__))))
    return TFLiteConversionError(
        f"{strings_read(model, strings)}, which need"
        f"{' ' + ', '.join(ops) if ops else ''} ops TFLite has no builtin for: a .tflite file "
        "keeps a StringLookup (whole tokens looked up in a table). Standardize and split the "
        "text before the model (keras.Input of tokens into a StringLookup), or " + IDS_ADVICE)


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


def _stateful_converter(graph, model, signature, *, tables: bool = False):
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
    if tables:  # a model reading strings: its lookup tables found (see frozen_converter)
        holder.owners = [graph, model]
    holder.serve = tf.function(serve, input_signature=signature, autograph=False)
    # "reset" sets the state to its inputs: zeros to reset, as layer.reset_state() does, or a
    # state saved earlier (LiteRT's own interpreter refuses a signature without inputs)
    holder.reset = tf.function(reset, autograph=False, input_signature=[
        tf.TensorSpec(variable.shape, variable.dtype, name=state_input_name(index))
        for index, variable in enumerate(variables)])
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.serve.get_concrete_function(), holder.reset.get_concrete_function()], holder)


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
