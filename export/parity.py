"""Proof that an exported file computes what the Keras model computes.

`verify` runs the Keras model and the exported file, in the runtime a user would run (LiteRT
for .tflite, ONNX Runtime for .onnx), on the same inputs, and reports the max absolute
difference and the argmax agreement against a named tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export import table

# ONNX Runtime's RNN/LSTM/GRU kernels and Keras both compute in float32 but sum the matmuls in
# a different order. Measured here: at most 3.6e-7 on the lecture models (the time series
# regression, 7 steps) and 2.4e-7 over the cell x stack x masking sweep of the tests (up to 40
# steps). 1e-5 leaves room for longer sequences while a wrong gate order or weight layout moves
# outputs by far more; Keras's own ONNX export tests use the same bound.
ONNX_TOLERANCE = 1e-5
# TFLite runs FULLY_CONNECTED and its element-wise kernels through XNNPACK, which reorders
# float32 sums and uses its own tanh/logistic approximations. Measured here: at most 3.6e-7 on
# the lecture models. 1e-4 is the bound Keras's LiteRT export tests use for float files.
TFLITE_TOLERANCE = 1e-4
# The bounds above are absolute: an output whose values are all small (a head with small
# weights, a probability near 0) would pass them while wrong (measured: a file exported from
# an unrelated model of the same shape, outputs around 1e-4, 158% off, passed both). So every
# float output must also stay within its own scale: max|diff| <= RELATIVE_FLOOR +
# RELATIVE_TOLERANCE * max|Keras output|. Float32 rounding moves exact exports by about 1e-7
# of the output's scale (measured above on outputs of order 1), so 1e-3 of the scale is 10^4
# times that margin while any other model's output, off by the order of the output itself,
# fails it. The floor: the hidden states (within [-1, 1]) carry float32 rounding of about 1e-7
# per step into any output, however small its scale.
RELATIVE_TOLERANCE = 1e-3
RELATIVE_FLOOR = 1e-6
# Quantized files (int8 / float16 weights) are not judged on values but on decisions: the
# share of steps whose argmax (predicted class) equals the Keras model's, on the inputs the user
# gave (the calibration data for int8: every decision kept) ...
QUANTIZED_MIN_AGREEMENT = 1.0
# ... and on seeded held-out inputs of the model's kind (random ids, random one-hot steps when
# the given inputs are one-hot, else standard normal features), so that a file calibrated on
# the wrong data cannot pass on its own calibration set. Far below 100%: held-out sequences are
# ones the model never saw, where the int8 ranges calibrated on the training data saturate.
# Measured here on random one-hot sequences for the hihello int8 files (trained on one
# sentence, the worst case): 70% (GRU), 96% (SimpleRNN), 100% (LSTM); the same files calibrated
# on the inputs x 1e30: 13-40%.
HELD_OUT_MIN_AGREEMENT = 0.5


@dataclass
class ParityReport:
    """What `verify` measured for one exported file."""

    format: str  # "tflite" or "onnx"
    path: str
    size_bytes: int
    quantized: bool
    max_abs_diff: float  # inf when a NaN or inf on one side is finite on the other
    argmax_agreement: float | None  # None for outputs with a single unit (regression)
    tolerance: float | None  # the float bound used, or None when judged on decisions
    min_agreement: float | None  # the decision bound used for quantized files
    passed: bool
    cases: list = field(default_factory=list)  # input shapes compared
    nonfinite_mismatches: int = 0  # positions NaN/inf on one side only (both NaN agree)
    held_out_agreement: float | None = None  # quantized files: agreement on held-out inputs
    forms: dict = field(default_factory=dict)  # {recurrent layer: the form its loop got}
    # per output: max|diff| / (RELATIVE_FLOOR + RELATIVE_TOLERANCE * max|Keras|), the share of
    # its own-scale bound used (float files pass only with every value <= 1)
    scaled_diffs: dict = field(default_factory=dict)

    @property
    def judged_on(self) -> str:
        if self.tolerance is not None:
            return (f"max abs diff <= {self.tolerance:g} and <= {RELATIVE_FLOOR:g} + "
                    f"{RELATIVE_TOLERANCE:g} max|Keras|")
        return (f"argmax agreement >= {self.min_agreement:.0%} (held-out >= "
                f"{HELD_OUT_MIN_AGREEMENT:.0%})")

    def __str__(self) -> str:
        agreement = "-" if self.argmax_agreement is None else f"{self.argmax_agreement:.2%}"
        held_out = ("" if self.held_out_agreement is None
                    else f", held-out agreement {self.held_out_agreement:.2%}")
        nonfinite = (f", {self.nonfinite_mismatches} NaN/inf mismatches"
                     if self.nonfinite_mismatches else "")
        return (
            f"{self.format} {Path(self.path).name}: {'PASS' if self.passed else 'FAIL'} "
            f"(max abs diff {self.max_abs_diff:.3g}, argmax agreement {agreement}{held_out}"
            f"{nonfinite}, judged on {self.judged_on}, {len(self.cases)} input shapes"
            + (f", recurrent forms {self.forms}" if self.forms else "") + ")"
        )


def verify(
    model,
    path,
    inputs=None,
    *,
    tolerance: float | None = None,
    min_agreement: float | None = None,
    seed: int = 0,
    trusted: bool = False,
) -> ParityReport:
    """Compares a Keras model with its exported file on the same inputs.

    Args:
        model: the source Keras model.
        path: the exported `.tflite` or `.onnx` file.
        inputs: optional array of inputs (e.g. the lecture's data or the int8 calibration
            data), compared as given. Seeded held-out inputs are always compared too: several
            batch sizes and lengths for ONNX, the file's fixed shape (several batches) for
            TFLite; drawn like `inputs` when given (their steps reshuffled into new rows);
            for masked models with padding at the start, the end and the middle of rows.
        tolerance: float bound on the max abs difference (default: ONNX_TOLERANCE or
            TFLITE_TOLERANCE). Ignored for quantized files.
        min_agreement: for quantized files, the minimum argmax agreement on `inputs`
            (default 1.0); held-out inputs must reach HELD_OUT_MIN_AGREEMENT.
        seed: for the held-out inputs.
        trusted: the file was just written by this process's exporters: skip the check that
            runs a .tflite file in a child process first (`export.runtime.load`).

    A model with `stateful=True` layers is compared over a run of calls, each continuing from
    the state the last one left, both sides starting from a reset state: `inputs` as
    consecutive batches of the model's batch size, then the held-out ones. A file that
    forgets or freezes the state differs from the second call on; a file that keeps a state
    for a model without one is refused (not this model's file). The Keras model's own state
    is put back afterwards.

    Returns:
        A `ParityReport`; `report.passed` says whether it met its bound. NaN compares equal
        only to NaN: a NaN (or inf) on one side where the other is finite fails any bound.
    """
    from export.graph import (
        input_specs,
        keras_outputs,
        output_names,
        stateful_batch,
        states_reset,
    )
    from export.runtime import load

    specs = input_specs(model)
    exported = load(path, trusted=trusted)
    missing = sorted({name for name, _, _ in specs} - set(exported.inputs))
    if missing or sorted(exported.output_names) != sorted(output_names(model)):
        raise ValueError(
            f"{Path(path).name} has inputs {sorted(exported.inputs)} and outputs "
            f"{sorted(exported.output_names)}; the model has {[n for n, _, _ in specs]} and "
            f"{output_names(model)}: it was not exported from this model.")
    given = _given_case(specs, inputs)
    batch = stateful_batch(model)  # None: no state kept between calls
    if batch is None and exported.stateful:
        raise ValueError(
            f"{Path(path).name} carries a state from call to call, but the model has no "
            "stateful layers: it was not exported from this model.")
    held_out = _held_out_cases(model, specs, exported, given, seed, batch=batch)
    cases = [("given", given)] * (given is not None) + [("held_out", c) for c in held_out]
    if batch is not None:
        cases = [(kind, part) for kind, case in cases for part in _consecutive(case, batch)]
        exported.reset_states()
    differences, nonfinite, agreements = [], 0, {"given": [], "held_out": []}
    shapes, per_output = [], {}
    with states_reset(model):
        for kind, case in cases:
            expected = keras_outputs(model, case)
            actual = (_run_in_batches(exported, case) if batch is None
                      else exported.run_named(case))
            for name, value in expected.items():
                if actual[name].shape != value.shape:
                    raise ValueError(
                        f"{Path(path).name} returned shape {actual[name].shape} for {name!r}; "
                        f"the Keras model returned {value.shape}.")
                difference, mismatches = compare(actual[name], value)
                differences.append(difference)
                nonfinite += mismatches
                _track(per_output, name, difference, value)
                if value.ndim > 1 and value.shape[-1] > 1:
                    agreements[kind].append(
                        (actual[name].argmax(-1) == value.argmax(-1)).reshape(-1))
            shapes.append(tuple(next(iter(case.values())).shape))
    max_diff = max(differences)
    every = agreements["given"] + agreements["held_out"]
    agreement = float(np.concatenate(every).mean()) if every else None
    quantized = bool(exported.quantized)
    held_out_agreement = None
    if quantized:
        bound = QUANTIZED_MIN_AGREEMENT if min_agreement is None else min_agreement
        if agreement is None:
            raise ValueError(
                "A quantized regression output (one unit) has no decisions to compare; "
                "judge it with your own error metric on real data."
            )
        held_out_agreement = float(np.concatenate(agreements["held_out"]).mean())
        if agreements["given"]:
            agreement = float(np.concatenate(agreements["given"]).mean())
        passed = (agreement >= bound and held_out_agreement >= HELD_OUT_MIN_AGREEMENT
                  and nonfinite == 0)
        tolerance = None
    else:
        bound = None
        if tolerance is None:
            tolerance = _format(exported).tolerance
        passed = _float_passed(max_diff, tolerance, per_output)
    return ParityReport(
        format=exported.format,
        path=str(path),
        size_bytes=Path(path).stat().st_size,
        quantized=quantized,
        max_abs_diff=max_diff,
        argmax_agreement=agreement,
        tolerance=tolerance,
        min_agreement=bound,
        passed=bool(passed),
        cases=shapes,
        nonfinite_mismatches=nonfinite,
        held_out_agreement=held_out_agreement,
        forms=_forms(exported),
        scaled_diffs=_scaled(per_output),
    )


def _track(per_output: dict, name: str, difference: float, expected) -> None:
    """Keeps each output's largest difference and largest finite |Keras| value."""
    finite = np.abs(np.asarray(expected, np.float64)[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 0.0
    old_difference, old_scale = per_output.get(name, (0.0, 0.0))
    per_output[name] = (max(old_difference, difference), max(old_scale, scale))


def _float_passed(max_diff: float, tolerance: float, per_output: dict) -> bool:
    """A float file's verdict: within the absolute bound and every output within its own
    scale (see RELATIVE_TOLERANCE)."""
    return bool(max_diff <= tolerance and all(v <= 1 for v in _scaled(per_output).values()))


def _scaled(per_output: dict) -> dict:
    """Each output's difference as a share of its own-scale bound (see RELATIVE_TOLERANCE)."""
    return {name: difference / (RELATIVE_FLOOR + RELATIVE_TOLERANCE * scale)
            for name, (difference, scale) in per_output.items()}


def verify_step(model, path, *, tolerance: float | None = None, seed: int = 0,
                trusted: bool = False) -> ParityReport:
    """Compares a streaming step model file (`export.streaming.export_step`) with its Keras model.

    Seeded held-out sequences (one step and seven) are fed step by step from zero states,
    carrying the state as a device does; every step's output must equal what Keras gives on
    the whole sequence (its last step's, for a model with one output per sequence), within
    the format's float bound and each output's own scale, as `verify` judges float files.

    Args:
        model: the source Keras model (one input, one output).
        path: the `.step.tflite` or `.step.onnx` file.
    """
    from export.graph import input_specs, keras_outputs, output_names
    from export.runtime import StepModel

    step_model = StepModel(path, trusted=trusted)
    specs = input_specs(model)
    if len(specs) != 1 or len(output_names(model)) != 1:
        raise ValueError(
            f"verify_step compares models of one input and one output; {model.name!r} has "
            f"{len(specs)} and {len(output_names(model))}: stream {Path(path).name} with "
            "export.runtime.StepModel on your own sequences.")
    (name, shape, _), = specs
    rng = np.random.default_rng(seed)
    batch = step_model.batch_size or 3
    differences, per_output, nonfinite, shapes = [], {}, 0, []
    for length in (1, 7):
        if step_model.takes_ids:
            sequence = rng.integers(1, max(_vocabulary_size(model), 2), (batch, length))
        else:
            sequence = rng.normal(size=(batch, length, shape[-1])).astype(np.float32)
        sequence = sequence.astype(step_model.input_dtype)
        expected = next(iter(keras_outputs(model, {name: sequence}).values()))
        state, steps = step_model.initial_state(batch), []
        for t in range(length):
            output, state = step_model.step(sequence[:, t], state)
            steps.append(output)
        streamed = np.stack(steps, axis=1) if expected.ndim == steps[-1].ndim + 1 else steps[-1]
        if streamed.shape != expected.shape:
            raise ValueError(f"{Path(path).name} streams outputs of shape {streamed.shape}; the "
                             f"Keras model returned {expected.shape}: not this model's file.")
        difference, mismatches = compare(streamed, expected)
        differences.append(difference)
        nonfinite += mismatches
        _track(per_output, "outputs", difference, expected)
        shapes.append(sequence.shape)
    if tolerance is None:
        tolerance = _format(step_model.model).tolerance
    max_diff = max(differences)
    return ParityReport(
        format=step_model.model.format, path=str(path), size_bytes=Path(path).stat().st_size,
        quantized=False, max_abs_diff=max_diff, argmax_agreement=None, tolerance=tolerance,
        min_agreement=None, passed=_float_passed(max_diff, tolerance, per_output),
        cases=shapes, nonfinite_mismatches=nonfinite, scaled_diffs=_scaled(per_output),
    )


def _format(exported):
    """The loaded file's row of the format table (`export.formats`)."""
    from export.formats import get_format

    return get_format(exported.format)


def _vocabulary_size(model) -> int:
    """The smallest Embedding's vocabulary: ids drawn below it are valid for every input."""
    from export.graph import all_layers

    return min((layer.input_dim for layer in all_layers(model) if hasattr(layer, "input_dim")
                and type(layer).__name__ == "Embedding"), default=10)


def _forms(exported) -> dict:
    import json

    from export.runtime import FORMS_METADATA

    try:
        forms = json.loads(exported.metadata.get(FORMS_METADATA, "{}"))
    except json.JSONDecodeError:
        return {}
    return forms if isinstance(forms, dict) else {}


def compare(actual, expected) -> tuple[float, int]:
    """The max abs difference of two float arrays and the count of positions where one side
    is NaN or inf and the other is not the same value. Both NaN (or the same inf) agree; any
    other non-finite mismatch makes the difference inf (NaN would vanish from a max)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    finite = np.isfinite(actual) & np.isfinite(expected)
    same_nonfinite = (~finite) & ((np.isnan(actual) & np.isnan(expected)) | (actual == expected))
    mismatches = int(np.count_nonzero(~finite & ~same_nonfinite))
    if mismatches:
        return float("inf"), mismatches
    if not finite.any():
        return 0.0, 0
    return float(np.max(np.abs(actual[finite] - expected[finite]))), 0


def _run_in_batches(exported, feeds: dict) -> dict:
    """Runs named inputs; a fixed-batch TFLite file chunk by chunk (the last chunk padded by
    repetition). Returns every output by name."""
    rows = len(next(iter(feeds.values())))
    batch = exported.inputs[next(iter(feeds))][0][0]
    if not _format(exported).fixed_shape or batch == rows:
        return exported.run_named(feeds)
    chunks = []
    for start in range(0, rows, batch):
        part = {name: np.resize(value[start:start + batch], (batch,) + value.shape[1:])
                for name, value in feeds.items()}
        count = min(batch, rows - start)
        chunks.append({name: value[:count] for name, value in exported.run_named(part).items()})
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _consecutive(case: dict, batch: int) -> list[dict]:
    """A stateful model's inputs as consecutive calls of its fixed batch size."""
    rows = len(next(iter(case.values())))
    if rows % batch:
        raise ValueError(
            f"inputs have {rows} rows; a stateful model runs batches of exactly {batch} rows: "
            f"give a multiple of {batch} (consecutive batches, compared call after call).")
    return [{name: value[start:start + batch] for name, value in case.items()}
            for start in range(0, rows, batch)]


def _given_case(specs, inputs):
    """The user's inputs as a dict by input name (an array for one input; a list in input
    order or a dict for several), checked against the model's inputs."""
    if inputs is None:
        return None
    names = [name for name, _, _ in specs]
    if isinstance(inputs, dict):
        arrays = [inputs.get(name) for name in names]
    elif len(specs) > 1:
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else []
    else:
        arrays = [inputs]
    if len(arrays) != len(specs) or any(array is None for array in arrays):
        raise ValueError(f"inputs must give every model input {names}: a list in that order "
                         "or a dict by name.")
    case = {}
    for (name, shape, _), array in zip(specs, arrays):
        array = np.asarray(array)
        if array.ndim != len(shape):
            raise ValueError(f"inputs for {name!r} have shape {array.shape}; the model takes "
                             f"rank {len(shape)} input {shape}.")
        if array.size == 0:
            raise ValueError(f"inputs for {name!r} have shape {array.shape}, with an empty "
                             "axis: give at least one row of at least one step.")
        case[name] = array
    return case


def _held_out_cases(model, specs, exported, given, seed: int, *, batch=None) -> list[dict]:
    from export.graph import all_layers

    rng = np.random.default_rng(seed)
    layers = list(all_layers(model))
    vocabulary = _vocabulary_size(model)
    masking = [layer for layer in layers if type(layer).__name__ == "Masking"]
    masked = bool(masking) or any(getattr(layer, "mask_zero", False) for layer in layers)
    padding_value = masking[0].mask_value if masking else 0
    first_shape = exported.inputs[specs[0][0]][0]
    if _format(exported).fixed_shape:
        batches = [first_shape[0] * 2, first_shape[0] * 3]
        lengths = [None, None]  # fixed in the file
    else:
        given_len = None
        if given is not None:
            given_len = next((a.shape[1] for a in given.values() if a.ndim > 1), None)
        batches, lengths = [1, 3, 5], [1, given_len or 7, 40]
    if batch is not None:  # a stateful model: three calls each, of the state's batch
        batches = [batch * 3] * len(batches)
    cases = []
    for batch, length in zip(batches, lengths):
        case, valid = {}, None
        for name, _, dtype in specs:
            file_shape = exported.inputs[name][0]
            shape = [batch] + [length if axis == 1 and size is None else (size or 8)
                               for axis, size in enumerate(file_shape[1:], start=1)]
            if np.dtype(dtype).kind in "iu":
                value = rng.integers(1, max(vocabulary, 2), shape).astype(dtype)
            elif given is not None and _is_one_hot(given[name]):
                value = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]
            else:
                value = rng.normal(size=shape).astype(np.float32)
            if masked and len(shape) > 1 and shape[1] > 1:
                if valid is None or valid.shape != tuple(shape[:2]):
                    valid = padding_patterns(shape[0], shape[1], rng)
                value[~valid] = padding_value
            case[name] = value
        cases.append(case)
    return cases


def _is_one_hot(inputs) -> bool:
    """True for one-hot steps (a single 1, else 0; all-zero padding steps allowed)."""
    if not np.isin(inputs, (0, 1)).all():
        return False
    return bool(np.isin(inputs.sum(-1), (0, 1)).all())


PADDING_PATTERNS = ("none", "end", "start", "middle")


def padding_patterns(batch: int, length: int, rng, patterns=PADDING_PATTERNS) -> np.ndarray:
    """(batch, length) booleans, False = padding: row r takes `patterns[r % len(patterns)]`,
    padding at the end (`pad_sequences(padding="post")`), at the start (its default) or a
    third of the steps masked in the middle, with random lengths."""
    valid = np.ones((batch, length), bool)
    for row in range(batch):
        cut = int(rng.integers(1, length))
        pattern = patterns[row % len(patterns)]
        if pattern == "end":
            valid[row, cut:] = False
        elif pattern == "start":
            valid[row, :cut] = False
        elif pattern == "middle":
            valid[row, rng.choice(length, size=max(1, length // 3), replace=False)] = False
    return valid


def format_table(rows) -> str:
    """A parity table: one row per (label, report)."""
    header = ("model", "format", "recurrent form", "size", "max abs diff", "argmax agree",
              "held-out agree", "judged on", "result")
    lines = []
    for label, report in rows:
        agreement = "-" if report.argmax_agreement is None else f"{report.argmax_agreement:.1%}"
        held_out = ("-" if report.held_out_agreement is None
                    else f"{report.held_out_agreement:.1%}")
        lines.append((
            label, report.format + (" (quantized)" if report.quantized else ""),
            ", ".join(sorted(set(report.forms.values()))) or "-",
            _size_text(report.size_bytes), f"{report.max_abs_diff:.2e}", agreement, held_out,
            report.judged_on, "PASS" if report.passed else "FAIL",
        ))
    return table.format_table(header, lines)


def _size_text(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"
