"""What `verify` measured for one file (`ParityReport`), and the parity table the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from export import table
from export.parity.tolerances import HELD_OUT_MIN_AGREEMENT, RELATIVE_FLOOR, RELATIVE_TOLERANCE


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
    runtimes: dict = field(default_factory=dict)  # {runtime that judged: its max abs diff}
    # the share of each output's scale allowed (RELATIVE_TOLERANCE; more for a model that
    # computes in half precision: HALF_PRECISION_TOLERANCE)
    relative_tolerance: float = RELATIVE_TOLERANCE

    @property
    def judged_on(self) -> str:
        if self.tolerance is not None:
            return (f"max abs diff <= {self.tolerance:g} and <= {RELATIVE_FLOOR:g} + "
                    f"{self.relative_tolerance:g} max|Keras|")
        return (f"argmax agreement >= {self.min_agreement:.0%} (held-out >= "
                f"{HELD_OUT_MIN_AGREEMENT:.0%})")

    @property
    def runs_in(self) -> str:
        """Each runtime that judged the file, with its max abs diff."""
        return ", ".join(f"{runtime} {diff:.1e}" for runtime, diff in self.runtimes.items())

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
            + (f", in {self.runs_in}" if self.runtimes else "")
            + (f", recurrent forms {self.forms}" if self.forms else "") + ")"
        )


def format_table(rows) -> str:
    """A parity table: one row per (label, report)."""
    header = ("model", "format", "recurrent form", "size", "max abs diff", "argmax agree",
              "held-out agree", "judged on", "runs in", "result")
    lines = []
    for label, report in rows:
        agreement = "-" if report.argmax_agreement is None else f"{report.argmax_agreement:.1%}"
        held_out = ("-" if report.held_out_agreement is None
                    else f"{report.held_out_agreement:.1%}")
        lines.append((
            label, report.format + (" (quantized)" if report.quantized else ""),
            ", ".join(sorted(set(report.forms.values()))) or "-",
            _size_text(report.size_bytes), f"{report.max_abs_diff:.2e}", agreement, held_out,
            report.judged_on, report.runs_in or "-", "PASS" if report.passed else "FAIL",
        ))
    return table.format_table(header, lines)


def _size_text(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"
