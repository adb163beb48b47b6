"""Plain-text tables for the examples' summaries, the parity report and the benchmarks."""

from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    """Terminal columns of `text`: wide characters (Hangul, CJK) take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def format_table(header, rows) -> str:
    """Left-aligned columns with a dashed rule under the header (aligned for Korean too)."""
    rows = [[str(value) for value in row] for row in rows]
    header = [str(value) for value in header]
    widths = [max(display_width(row[i]) for row in [header] + rows) for i in range(len(header))]

    def render(row):
        return "  ".join(value + " " * (width - display_width(value))
                         for value, width in zip(row, widths)).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in rows])
