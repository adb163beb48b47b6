"""What every lecture example shares: export a trained model and verify it, print the
summary table and then the parity table, exit with status 1 if a file failed. (The printing
and the exit status belong to the scripts; `export.pipeline` itself only returns reports.)"""

from export.metadata import vocabulary_metadata
from export.parity import format_table as format_parity
from export.pipeline import export_and_verify
from export.table import format_table


def export_lecture_model(result: dict, directory, name: str, **metadata):
    """`export_and_verify` for an example's result dict (`model`, `x`, optional `vocabulary`),
    verified on the lecture's own inputs; `metadata` entries are stored with the vocabulary."""
    return export_and_verify(
        result["model"], directory, name, inputs=result["x"],
        metadata=vocabulary_metadata(result.get("vocabulary"), **metadata),
    )


def print_summary(header, rows, parity_rows=()) -> None:
    """Prints an example's summary table, then its parity table if it exported anything;
    exits with status 1 if an exported file failed verification."""
    print()
    print(format_table(header, rows))
    if parity_rows:
        print()
        print(format_parity(parity_rows))
        if not all(report.passed for _, report in parity_rows):
            raise SystemExit(1)
