"""The RNN lectures (vanilla RNN, LSTM, GRU) rebuilt in Keras 3.

The public names load their module on first use (PEP 562): code on a device that reads a
`keras_rnn.Vocabulary` from an exported file loads neither the model nor the training code,
and `build_model`, `train` and friends import Keras only when called.
"""

import importlib

_EXPORTS = {
    "build_model": "keras_rnn.models",
    "CELLS": "keras_rnn.models",
    "datasets": "keras_rnn.datasets",
    "RNNConfig": "keras_rnn.models",
    "save_model": "keras_rnn.training",
    "seed_everything": "keras_rnn.training",
    "train": "keras_rnn.training",
    "Vocabulary": "keras_rnn.vocab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_rnn' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name == "datasets" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
