"""The lecture data sets, exactly as the lectures use them (see LECTURES.md), plus the stock
series: a CSV in the lecture's format, or the real daily GOOG prices that the `backtesting`
package ships (read offline from its installed files)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HIHELLO = ("hihell", "ihello")
CHAR_SEQUENCE = " if you want you"
LONG_SENTENCE = (
    "if you want to build a ship, don't drum up people together to collect wood and don't "
    "assign them tasks and work, but rather teach them to long for the endless immensity of "
    "the sea."
)
SENTIMENT_WORDS = ("good", "bad", "worse", "so good")
SENTIMENT_LABELS = (1, 0, 0, 1)
SENTIMENT_LENGTH = 10
AUTHOR_SENTENCES = (
    "What I cannot create, I do not understand.",
    "Intellecuals solve problems, geniuses prevent them",  # the typo is the lecture's
    "A person who never made a mistake never tied anything new.",
    "The same equations have the same solutions.",
)
AUTHOR_LABELS = (1, 0, 0, 1)  # 1: Feynman, 0: Einstein
AUTHOR_LENGTH = 55
BASICS_CHARS = ("h", "e", "l", "o")  # the shapes demo's own one-hot order: h, e, l, o
BASICS_BATCH = ("hello", "eolll", "lleel")
STOCK_COLUMNS = ("Open", "High", "Low", "Volume", "Close")  # Close (last) is the target
PADDING_WORDS = ("hello world", "midnight", "calculation", "path", "short circuit")
POS_SENTENCES = (
    "I feel hungry",
    "tensorflow is very difficult",
    "tensorflow is a framework for deep learning",
    "tensorflow is very fast changing",
)
POS_TAGS = (
    "pronoun verb adjective",
    "noun verb adverb adjective",
    "noun verb determiner noun preposition adjective noun",
    "noun verb adverb adjective verb",
)
POS_LENGTH = 10
TRANSLATION_PAIRS = (  # English -> Korean, word level
    ("I feel hungry", "나는 배가 고프다"),
    ("tensorflow is very difficult", "텐서플로우는 매우 어렵다"),
    ("tensorflow is a framework for deep learning", "텐서플로우는 딥러닝을 위한 프레임워크이다"),
    ("tensorflow is very fast changing", "텐서플로우는 매우 빠르게 변화한다"),
)


def windows(text: str, size: int) -> tuple[list[str], list[str]]:
    """Every window of `size` characters and the same window shifted by one (stride 1)."""
    if len(text) <= size:
        raise ValueError(f"Text of {len(text)} characters is too short for windows of {size}.")
    inputs = [text[i:i + size] for i in range(len(text) - size)]
    targets = [text[i + 1:i + size + 1] for i in range(len(text) - size)]
    return inputs, targets


@dataclass(frozen=True)
class Series:
    """A table of daily prices in the lecture's column order, oldest row first."""

    values: np.ndarray  # (days, 5): Open, High, Low, Volume, Close
    source: str


def load_stock_csv(path) -> Series:
    """Reads the lecture's stock file: `#` comment lines, columns Open, High, Low, Volume,
    Close, newest row first (reversed here to oldest first).

    Raises:
        ValueError: naming the file and line of the first malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Stock CSV {str(path)!r} does not exist.")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [field.strip() for field in stripped.split(",")]
        if len(fields) != len(STOCK_COLUMNS):
            raise ValueError(
                f"{path}:{number}: expected {len(STOCK_COLUMNS)} comma-separated columns "
                f"({', '.join(STOCK_COLUMNS)}), got {len(fields)}: {stripped!r}."
            )
        try:
            rows.append([float(field) for field in fields])
        except ValueError:
            raise ValueError(f"{path}:{number}: a value is not a number: {stripped!r}.") from None
    if len(rows) < 10:
        raise ValueError(f"{path}: only {len(rows)} data rows; need at least 10.")
    return Series(np.asarray(rows[::-1], np.float64), str(path))


def load_packaged_stock() -> Series:
    """Real daily GOOG prices 2004-2013 (2148 days) from the `backtesting` package's files."""
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "The packaged stock series needs the `backtesting` package "
            "(pip install -r requirements.txt), or pass --csv PATH."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "GOOG.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [name.strip() for name in lines[0].split(",")]
    columns = [header.index(name) for name in STOCK_COLUMNS]
    rows = [[float(line.split(",")[c]) for c in columns] for line in lines[1:] if line.strip()]
    return Series(np.asarray(rows, np.float64), f"GOOG daily prices ({path.name}, backtesting)")


def min_max_scale(values: np.ndarray, reference: np.ndarray | None = None):
    """Scales each column to [0, 1] using `reference`'s min and max (default: `values`)."""
    reference = values if reference is None else reference
    low, high = reference.min(axis=0), reference.max(axis=0)
    return (values - low) / np.maximum(high - low, 1e-7)


def stock_windows(values: np.ndarray, length: int = 7):
    """Windows of `length` days x 5 features -> the next day's Close (last column)."""
    inputs = np.stack([values[i:i + length] for i in range(len(values) - length)])
    targets = values[length:, -1:]
    return inputs.astype(np.float32), targets.astype(np.float32)
