"""Shared fixtures: lecture models are trained once per session and reused across tests."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # the examples are imported as modules here

CELLS = ("simple_rnn", "lstm", "gru")


@pytest.fixture(scope="session")
def hihello_results():
    import hihello

    return {cell: hihello.run(cell, verbose=False) for cell in CELLS}


@pytest.fixture(scope="session")
def sentiment_results():
    import sentiment

    return {cell: sentiment.run(cell, verbose=False) for cell in CELLS}


@pytest.fixture(scope="session")
def author_results():
    import author

    return {cell: author.run(cell, verbose=False) for cell in CELLS}


@pytest.fixture(scope="session")
def char_sequence_results():
    import char_sequence

    return {cell: char_sequence.run(cell, verbose=False) for cell in CELLS}


@pytest.fixture(scope="session")
def long_sentence_results():
    import long_sentence

    return {cell: long_sentence.run(cell, verbose=False) for cell in CELLS}
