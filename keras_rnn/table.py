"""Plain-text tables for the examples' summaries, the parity report and the benchmarks."""

from __future__ import annotations


def format_table(header, rows) -> str:
    """Left-aligned columns with a dashed rule under the header."""
    rows = [[str(value) for value in row] for row in rows]
    header = [str(value) for value in header]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def render(row):
        return "  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in rows])
