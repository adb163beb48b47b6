"""Shared fixtures: lecture models are trained once per session and reused across tests."""

import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # the examples are imported as modules here

CELLS = ("simple_rnn", "lstm", "gru")
TRAINED_FIXTURES = {"hihello_results", "sentiment_results", "author_results",
                    "char_sequence_results", "long_sentence_results", "pos_results", "translators"}


def pytest_collection_modifyitems(items):
    """A test that needs a trained lecture model is slow (the fast tier, `pytest -m "not
    slow"`, skips it); others carry `@pytest.mark.slow` where they convert large models,
    install packages or start fresh processes."""
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _train_every_cell(example: str) -> dict:
    """`examples/<example>.py`'s `run(cell)` for each cell, keyed by cell."""
    module = importlib.import_module(example)
    return {cell: module.run(cell, verbose=False) for cell in CELLS}


@pytest.fixture(scope="session")
def hihello_results():
    return _train_every_cell("hihello")


@pytest.fixture(scope="session")
def sentiment_results():
    return _train_every_cell("sentiment")


@pytest.fixture(scope="session")
def author_results():
    return _train_every_cell("author")


@pytest.fixture(scope="session")
def char_sequence_results():
    return _train_every_cell("char_sequence")


@pytest.fixture(scope="session")
def long_sentence_results():
    return _train_every_cell("long_sentence")
