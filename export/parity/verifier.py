"""Proof that an exported file computes what the Keras model computes.

`verify` runs the Keras model and the exported file, in the runtime a user would run (LiteRT
for .tflite, ONNX Runtime for .onnx), on the same inputs, and reports the max absolute
difference and the argmax agreement against a named tolerance; `verify_step` does the same for
a streaming step model, fed held-out sequences step by step with the state carried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.parity.inputs import consecutive, format_row, given_case, held_out_cases, vocabulary_size
from export.parity.report import ParityReport
from export.parity.tolerances import (
    HALF_PRECISION_TOLERANCE,
    HELD_OUT_MIN_AGREEMENT,
    QUANTIZED_MIN_AGREEMENT,
    RELATIVE_FLOOR,
    RELATIVE_TOLERANCE,
)

# The ONNX reference evaluator runs in pure NumPy (its recurrent operators loop over steps in
# Python): on files up to this size `verify` also judges there by default, in seconds.
REFERENCE_MAX_BYTES = 16 * 1024 * 1024


def verify(
    model,
    path,
    inputs=None,
    *,
    tolerance: float | None = None,
    min_agreement: float | None = None,
    seed: int = 0,
    trusted: bool = False,
    runtimes=None,
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
        runtimes: the runtimes that judge the file, each on every input (see
            `export.runtime.engines`): by default LiteRT for .tflite; for .onnx ONNX Runtime
            and, when the file is at most REFERENCE_MAX_BYTES, the ONNX reference evaluator
            (the specification's meaning, which other runtimes are built against; pure
            NumPy, so slow on large files) unless the file claims ONNX Runtime alone (its
            `onnx_runtimes` metadata: a graph holding tf2onnx's own `Loop` form). Add
            "openvino" to judge there too. The file passes only if it passes in every one.

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
    from export.model.signature import input_specs, keras_outputs, output_names
    from export.model.state import stateful_batch, states_reset
    from export.runtime import load

    model, half_bound, relative = _judged_model(model)
    specs = input_specs(model)
    exported = load(path, trusted=trusted)
    runtimes = _runtimes(exported, path, runtimes)
    missing = sorted({name for name, _, _ in specs} - set(exported.inputs))
    if missing or sorted(exported.output_names) != sorted(output_names(model)):
        raise ValueError(
            f"{Path(path).name} has inputs {sorted(exported.inputs)} and outputs "
            f"{sorted(exported.output_names)}; the model has {[n for n, _, _ in specs]} and "
            f"{output_names(model)}: it was not exported from this model.")
    given = given_case(specs, inputs)
    batch = stateful_batch(model)  # None: no state kept between calls
    if batch is None and exported.stateful:
        raise ValueError(
            f"{Path(path).name} carries a state from call to call, but the model has no "
            "stateful layers: it was not exported from this model.")
    held_out = held_out_cases(model, specs, exported, given, seed, batch=batch)
    cases = [("given", given)] * (given is not None) + [("held_out", c) for c in held_out]
    if batch is not None:
        cases = [(kind, part) for kind, case in cases for part in consecutive(case, batch)]
        exported.reset_states()
    expected_cases = []
    with states_reset(model):
        for _, case in cases:
            expected_cases.append(keras_outputs(model, case))
    judged = {}  # runtime -> (differences, nonfinite, agreements, per_output)
    for runtime in runtimes:
        if runtime != exported.runtime:
            exported = load(path, trusted=True, runtime=runtime)  # (checked by the first load)
        if batch is not None:
            exported.reset_states()
        judged[runtime] = _measure(exported, path, cases, expected_cases, batch)
    shapes = [tuple(next(iter(case.values())).shape) for _, case in cases]
    differences, nonfinite, agreements, per_output = judged[runtimes[0]]
    for other in runtimes[1:]:  # every runtime's differences count; decisions: the first's
        differences = differences + judged[other][0]
        nonfinite += judged[other][1]
        for name, (difference, scale) in judged[other][3].items():
            _track_scaled(per_output, name, difference, scale)
    max_diff = max(differences)
    agreement = _share(agreements["given"] + agreements["held_out"])
    quantized = bool(exported.quantized)
    held_out_agreement = None
    if quantized:
        agreement, held_out_agreement, bound, passed = _judged_on_decisions(
            agreements, min_agreement, nonfinite)
        tolerance = None
    else:
        bound = None
        if tolerance is None:
            tolerance = max(format_row(exported).tolerance, half_bound)
        passed = _float_passed(max_diff, tolerance, per_output, relative)
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
        scaled_diffs=_scaled(per_output, relative),
        runtimes={runtime: max(result[0]) for runtime, result in judged.items()},
        relative_tolerance=relative,
    )


def _judged_model(model):
    """`(model, half_bound, relative)`: the model as the exporters see it (a subclassed model's
    functional view), and for a model computing in half precision its precision's bound
    (HALF_PRECISION_TOLERANCE; 0 otherwise) with the share of each output's scale allowed."""
    from export.model.signature import exportable, half_precision

    model = exportable(model)
    half_bound = HALF_PRECISION_TOLERANCE.get(half_precision(model), 0.0)
    return model, half_bound, max(RELATIVE_TOLERANCE, half_bound)


def _runtimes(exported, path, runtimes) -> tuple:
    """The runtimes that judge a file (see `verify`), the loaded file's own first."""
    from export.runtime.engines import ONNX_RUNTIMES

    if runtimes is None:
        if exported.format != "onnx":
            return (exported.runtime,)
        small = Path(path).stat().st_size <= REFERENCE_MAX_BYTES
        if small and "reference" in claimed_runtimes(exported):
            return ("onnxruntime", "reference")
        return ("onnxruntime",)
    runtimes = tuple(runtimes)
    known = ONNX_RUNTIMES if exported.format == "onnx" else (exported.runtime,)
    unknown = [runtime for runtime in runtimes if runtime not in known]
    if unknown or not runtimes:
        raise ValueError(f"runtimes {list(runtimes)}: a .{exported.format} file runs in "
                         f"{list(known)}.")
    return tuple(sorted(runtimes, key=lambda runtime: runtime != exported.runtime))


def claimed_runtimes(exported) -> tuple:
    """The ONNX runtimes a file's metadata says it is proven in (`RUNTIMES_METADATA`); every
    one for a file that says nothing, so that `verify` judges an older file everywhere."""
    import json

    from export.runtime import RUNTIMES_METADATA
    from export.runtime.engines import ONNX_RUNTIMES

    try:
        claimed = json.loads(exported.metadata.get(RUNTIMES_METADATA, "null"))
    except json.JSONDecodeError:
        claimed = None
    if not isinstance(claimed, list):
        return ONNX_RUNTIMES
    return tuple(runtime for runtime in ONNX_RUNTIMES if runtime in claimed)


def _measure(exported, path, cases, expected_cases, batch):
    """Runs every case in one runtime: (differences, NaN/inf mismatches, decisions per kind
    of case, {output: (largest difference, largest |Keras|)})."""
    differences, nonfinite, agreements, per_output = [], 0, {"given": [], "held_out": []}, {}
    for (kind, case), expected in zip(cases, expected_cases):
        actual = (_run_in_batches(exported, case) if batch is None
                  else exported.run_named(case))
        for name, value in expected.items():
            if actual[name].shape != value.shape:
                raise ValueError(
                    f"{Path(path).name} returned shape {actual[name].shape} for {name!r} in "
                    f"{exported.runtime}; the Keras model returned {value.shape}.")
            difference, mismatches = compare(actual[name], value)
            differences.append(difference)
            nonfinite += mismatches
            _track(per_output, name, difference, value)
            if value.ndim > 1 and value.shape[-1] > 1:
                agreements[kind].append(
                    (actual[name].argmax(-1) == value.argmax(-1)).reshape(-1))
    return differences, nonfinite, agreements, per_output


def _track_scaled(per_output: dict, name: str, difference: float, scale: float) -> None:
    old_difference, old_scale = per_output.get(name, (0.0, 0.0))
    per_output[name] = (max(old_difference, difference), max(old_scale, scale))


def _track(per_output: dict, name: str, difference: float, expected) -> None:
    """Keeps each output's largest difference and largest finite |Keras| value."""
    finite = np.abs(np.asarray(expected, np.float64)[np.isfinite(expected)])
    _track_scaled(per_output, name, difference, float(finite.max()) if finite.size else 0.0)


def _float_passed(max_diff: float, tolerance: float, per_output: dict,
                  relative: float = RELATIVE_TOLERANCE) -> bool:
    """A float file's verdict: within the absolute bound and every output within its own
    scale (see RELATIVE_TOLERANCE)."""
    return bool(max_diff <= tolerance
                and all(v <= 1 for v in _scaled(per_output, relative).values()))


def _scaled(per_output: dict, relative: float = RELATIVE_TOLERANCE) -> dict:
    """Each output's difference as a share of its own-scale bound (see RELATIVE_TOLERANCE)."""
    return {name: difference / (RELATIVE_FLOOR + relative * scale)
            for name, (difference, scale) in per_output.items()}


def verify_step(model, path, inputs=None, *, tolerance: float | None = None,
                min_agreement: float | None = None, seed: int = 0,
                trusted: bool = False) -> ParityReport:
    """Compares a streaming step model file (`export.streaming.export_step`) with its Keras model.

    Seeded held-out sequences (one step and seven) are fed step by step from zero states,
    carrying the state as a device does (drawn from the steps of `inputs` when given), and
    `inputs` themselves (whole sequences); every
    step's output must equal what Keras gives on the whole sequence (its last step's, for a
    model with one output per sequence), within the format's float bound and each output's own
    scale, as `verify` judges float files. A quantized step file is judged on decisions, as
    `verify` judges quantized files: the argmax at every step on `inputs` must agree at least
    `min_agreement` (default 1.0) and on the held-out sequences HELD_OUT_MIN_AGREEMENT.

    Args:
        model: the source Keras model (one input, one output).
        path: the `.step.tflite` or `.step.onnx` file.
        inputs: optional whole sequences, e.g. the int8 calibration data.
    """
    from export.model.signature import input_specs, output_names
    from export.runtime import StepModel

    model, half_bound, relative = _judged_model(model)
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
    cases = []
    if inputs is not None:
        given = np.asarray(inputs[name] if isinstance(inputs, dict) else inputs)
        if given.ndim != len(shape) or given.ndim < 2:
            raise ValueError(f"inputs has shape {given.shape}; expected whole sequences "
                             f"(n, steps{', ...' if len(shape) > 2 else ''}) like the model's "
                             f"input {shape}.")
        cases.append(("given", given.astype(step_model.input_dtype)))
    for length in (1, 7) if shape[1] is None else (shape[1],):  # a fixed length: that one
        if inputs is not None:  # drawn like the given sequences: their steps in new rows
            given = cases[0][1]
            rows = rng.integers(0, len(given), (batch, length))
            steps = rng.integers(0, given.shape[1], (batch, length))
            sequence = given[rows, steps]
        elif step_model.takes_ids:
            sequence = rng.integers(1, max(vocabulary_size(model), 2), (batch, length))
        else:
            sequence = rng.normal(size=(batch, length) + tuple(shape[2:])).astype(np.float32)
        cases.append(("held_out", sequence.astype(step_model.input_dtype)))
    differences, per_output, nonfinite, shapes = [], {}, 0, []
    agreements = {"given": [], "held_out": []}
    for kind, sequence in cases:
        expected, streamed = _streamed(model, name, step_model, sequence,
                                       step_model.batch_size or len(sequence), path)
        difference, mismatches = compare(streamed, expected)
        differences.append(difference)
        nonfinite += mismatches
        _track(per_output, "outputs", difference, expected)
        shapes.append(sequence.shape)
        if expected.shape[-1] > 1:
            agreements[kind].append(expected.argmax(-1) == streamed.argmax(-1))
    max_diff = max(differences)
    quantized = bool(step_model.model.quantized)
    agreement = _share(agreements["given"] + agreements["held_out"])
    held_out_agreement = bound = None
    if quantized:
        agreement, held_out_agreement, bound, passed = _judged_on_decisions(
            agreements, min_agreement, nonfinite)
        tolerance = None
    else:
        if tolerance is None:
            tolerance = max(format_row(step_model.model).tolerance, half_bound)
        passed = _float_passed(max_diff, tolerance, per_output, relative)
    return ParityReport(
        format=step_model.model.format, path=str(path), size_bytes=Path(path).stat().st_size,
        quantized=quantized, max_abs_diff=max_diff, argmax_agreement=agreement,
        tolerance=tolerance, min_agreement=bound, passed=bool(passed), cases=shapes,
        nonfinite_mismatches=nonfinite, held_out_agreement=held_out_agreement,
        scaled_diffs=_scaled(per_output, relative), relative_tolerance=relative,
    )


def _share(agreements: list) -> float | None:
    """The share of True among boolean arrays of any shapes (None for none)."""
    if not agreements:
        return None
    return float(np.concatenate([np.ravel(agreement) for agreement in agreements]).mean())


def _judged_on_decisions(agreements: dict, min_agreement, nonfinite: int):
    """A quantized file's verdict, for `verify` and `verify_step`: the argmax agreement on the
    given inputs (on every input when none were given) at least `min_agreement` (default
    QUANTIZED_MIN_AGREEMENT), on the held-out ones HELD_OUT_MIN_AGREEMENT, and no NaN or inf
    where Keras has none. Returns (agreement, held-out agreement, bound, passed)."""
    agreement = _share(agreements["given"] + agreements["held_out"])
    if agreement is None:
        raise ValueError(
            "A quantized regression output (one unit) has no decisions to compare; "
            "judge it with your own error metric on real data."
        )
    bound = QUANTIZED_MIN_AGREEMENT if min_agreement is None else min_agreement
    held_out = _share(agreements["held_out"])
    if agreements["given"]:
        agreement = _share(agreements["given"])
    passed = agreement >= bound and held_out >= HELD_OUT_MIN_AGREEMENT and nonfinite == 0
    return agreement, held_out, bound, passed


def _streamed(model, name, step_model, sequences, batch: int, path):
    """Keras's outputs on whole `sequences` and the step file's, streamed step by step from
    zero states in the file's batch (the last chunk filled by repeating rows, then cut)."""
    from export.model.signature import keras_outputs

    expected = next(iter(keras_outputs(model, {name: sequences}).values()))
    chunks = []
    for start in range(0, len(sequences), batch):
        chunk = sequences[start:start + batch]
        rows = len(chunk)
        if step_model.batch_size and rows < batch:
            chunk = np.resize(chunk, (batch,) + chunk.shape[1:])
        state, steps = step_model.initial_state(len(chunk)), []
        for t in range(chunk.shape[1]):
            output, state = step_model.step(chunk[:, t], state)
            steps.append(output[:rows])
        chunks.append(np.stack(steps, axis=1) if expected.ndim == steps[-1].ndim + 1
                      else steps[-1])
    streamed = np.concatenate(chunks)
    if streamed.shape != expected.shape:
        raise ValueError(f"{Path(path).name} streams outputs of shape {streamed.shape}; the "
                         f"Keras model returned {expected.shape}: not this model's file.")
    return expected, streamed


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
    if not format_row(exported).fixed_shape or batch == rows:
        return exported.run_named(feeds)
    chunks = []
    for start in range(0, rows, batch):
        part = {name: np.resize(value[start:start + batch], (batch,) + value.shape[1:])
                for name, value in feeds.items()}
        count = min(batch, rows - start)
        chunks.append({name: value[:count] for name, value in exported.run_named(part).items()})
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
