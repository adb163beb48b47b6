"""Proof that an exported file computes what the Keras model computes.

`verify` runs the Keras model and the exported file, in the runtime a user would run (LiteRT
for .tflite, ONNX Runtime for .onnx), on the same inputs, and reports the max absolute
difference and the argmax agreement against a named tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_rnn import table

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
# Quantized files (int8 / float16 weights) are not judged on values but on decisions: the
# share of steps whose argmax (predicted class) equals the Keras model's.
QUANTIZED_MIN_AGREEMENT = 1.0


@dataclass
class ParityReport:
    """What `verify` measured for one exported file."""

    format: str  # "tflite" or "onnx"
    path: str
    size_bytes: int
    quantized: bool
    max_abs_diff: float
    argmax_agreement: float | None  # None for outputs with a single unit (regression)
    tolerance: float | None  # the float bound used, or None when judged on decisions
    min_agreement: float | None  # the decision bound used for quantized files
    passed: bool
    cases: list = field(default_factory=list)  # input shapes compared

    @property
    def judged_on(self) -> str:
        if self.tolerance is not None:
            return f"max abs diff <= {self.tolerance:g}"
        return f"argmax agreement >= {self.min_agreement:.0%}"

    def __str__(self) -> str:
        agreement = "-" if self.argmax_agreement is None else f"{self.argmax_agreement:.2%}"
        return (
            f"{self.format} {Path(self.path).name}: {'PASS' if self.passed else 'FAIL'} "
            f"(max abs diff {self.max_abs_diff:.3g}, argmax agreement {agreement}, "
            f"judged on {self.judged_on}, {len(self.cases)} input shapes)"
        )


def verify(
    model,
    path,
    inputs=None,
    *,
    tolerance: float | None = None,
    min_agreement: float | None = None,
    seed: int = 0,
) -> ParityReport:
    """Compares a Keras model with its exported file on the same inputs.

    Args:
        model: the source Keras model.
        path: the exported `.tflite` or `.onnx` file.
        inputs: optional array of inputs (e.g. the lecture's data). Without them, seeded
            random inputs are used: several batch sizes and lengths for ONNX, the file's fixed
            shape (several batches) for TFLite; ids with trailing padding for masked models.
        tolerance: float bound on the max abs difference (default: ONNX_TOLERANCE or
            TFLITE_TOLERANCE). Ignored for quantized files.
        min_agreement: for quantized files, the minimum argmax agreement (default 1.0).
        seed: for the random inputs.

    Returns:
        A `ParityReport`; `report.passed` says whether it met its bound.
    """
    from export.runtime import load

    exported = load(path)
    cases = _input_cases(model, exported, inputs, seed)
    differences, agreements, shapes = [], [], []
    for case in cases:
        expected = np.asarray(model(case, training=False))
        actual = _run_in_batches(exported, case)
        if actual.shape != expected.shape:
            raise ValueError(
                f"{Path(path).name} returned shape {actual.shape}; the Keras model returned "
                f"{expected.shape} for input {case.shape}."
            )
        differences.append(float(np.max(np.abs(actual.astype(np.float64) - expected))))
        if expected.shape[-1] > 1:
            agreements.append((actual.argmax(-1) == expected.argmax(-1)).reshape(-1))
        shapes.append(tuple(case.shape))
    max_diff = max(differences)
    agreement = float(np.concatenate(agreements).mean()) if agreements else None
    quantized = bool(exported.quantized)
    if quantized:
        bound = QUANTIZED_MIN_AGREEMENT if min_agreement is None else min_agreement
        if agreement is None:
            raise ValueError(
                "A quantized regression output (one unit) has no decisions to compare; "
                "judge it with your own error metric on real data."
            )
        passed, tolerance = agreement >= bound, None
    else:
        bound = None
        if tolerance is None:
            tolerance = TFLITE_TOLERANCE if exported.format == "tflite" else ONNX_TOLERANCE
        passed = max_diff <= tolerance
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
    )


def _run_in_batches(exported, inputs: np.ndarray) -> np.ndarray:
    """Feeds a fixed-batch TFLite file chunk by chunk (the last chunk padded by repetition)."""
    batch = exported.input_shape[0]
    if exported.format != "tflite" or batch == len(inputs):
        return exported.run(inputs)
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        filled = np.resize(chunk, (batch,) + chunk.shape[1:])
        outputs.append(exported.run(filled)[: len(chunk)])
    return np.concatenate(outputs)


def _input_cases(model, exported, inputs, seed: int) -> list[np.ndarray]:
    from keras_rnn.structure import read_model

    structure = read_model(model)
    if inputs is not None:
        inputs = np.asarray(inputs)
        if inputs.ndim != len(structure.input_shape):
            raise ValueError(
                f"inputs have shape {inputs.shape}; the model takes rank "
                f"{len(structure.input_shape)} input {structure.input_shape}."
            )
        return [inputs]
    rng = np.random.default_rng(seed)
    if exported.format == "tflite":
        fixed_batch, fixed_len = exported.input_shape[:2]
        shapes = [(fixed_batch * 2, fixed_len), (fixed_batch, fixed_len)]
    else:
        own = structure.seq_len
        shapes = [(1, own or 1), (3, own or 7), (2, own or 40)]
    cases = []
    for batch, length in shapes:
        if structure.takes_ids:
            vocabulary = next(layer.table.shape[0] for layer in structure.layers
                              if hasattr(layer, "table"))
            case = rng.integers(1, vocabulary, (batch, length)).astype(np.int32)
        else:
            case = rng.normal(size=(batch, length, structure.input_shape[2])).astype(np.float32)
        if structure.masked and length > 1:
            lengths = rng.integers(1, length + 1, batch)
            lengths[0] = length  # keep one full row
            for row, valid in enumerate(lengths):
                case[row, valid:] = 0
        cases.append(case)
    return cases


def format_table(rows) -> str:
    """A parity table: one row per (label, report)."""
    header = ("model", "format", "size", "max abs diff", "argmax agree", "judged on", "result")
    lines = []
    for label, report in rows:
        agreement = "-" if report.argmax_agreement is None else f"{report.argmax_agreement:.1%}"
        lines.append((
            label, report.format + (" (quantized)" if report.quantized else ""),
            _size_text(report.size_bytes), f"{report.max_abs_diff:.2e}", agreement,
            report.judged_on, "PASS" if report.passed else "FAIL",
        ))
    return table.format_table(header, lines)


def _size_text(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def assert_outputs_close(name: str, actual, expected, tolerance: float) -> None:
    """Test helper: shape, dtype kind and values, with the max abs difference in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.dtype.kind != expected.dtype.kind:
        raise AssertionError(f"{name}: dtype {actual.dtype} != expected {expected.dtype}")
    difference = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=0, atol=tolerance,
        err_msg=f"{name}: max abs difference {difference:.3g} > tolerance {tolerance:g}",
    )
