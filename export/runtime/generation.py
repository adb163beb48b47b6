"""Streaming generation with a step model (`export.streaming`): `StepModel` runs one step with
the state carried by the caller; `generate` continues a prompt greedily, symbol by symbol."""

from __future__ import annotations

import re

import numpy as np

from export.runtime.checks import ModelFileError
from export.runtime.loaders import load
from export.runtime.metadata import MAIN_INPUT, MAIN_OUTPUT, check_vocabulary_size, vocabulary_field


class StepModel:
    """A streaming step model (`export.streaming.export_step`): one step's input and the state in,
    that step's output and the next state out. The caller carries the state. `runtime`: as
    `export.runtime.load` takes it (another ONNX runtime for an .onnx file)."""

    def __init__(self, path, *, num_threads: int = 1, trusted: bool = False,
                 runtime: str | None = None):
        self.model = load(path, num_threads=num_threads, trusted=trusted, runtime=runtime)
        self.path = self.model.path
        self.metadata = self.model.metadata
        self.state_names = _state_names(self.model, self.path)
        if MAIN_INPUT not in self.model.inputs or not self.state_names or self.model.stateful:
            raise ModelFileError(
                f"{str(self.path)!r} is not a step model (no 'inputs' and 'state_N' inputs): "
                "write one with export.streaming.export_step."
            )
        self.input_shape, self.input_dtype = self.model.inputs[MAIN_INPUT]
        self.state_sizes = [self.model.inputs[name][0][1] for name in self.state_names]
        missing = [f"next_{name}" for name in self.state_names
                   if f"next_{name}" not in self.model.output_names]
        if MAIN_OUTPUT not in self.model.output_names or missing:
            raise ModelFileError(
                f"{str(self.path)!r} is not a step model: it lacks the outputs "
                f"{([MAIN_OUTPUT] if MAIN_OUTPUT not in self.model.output_names else []) + missing}.")
        self.batch_size = self.input_shape[0]  # None: any batch (ONNX)
        self._next_names = [f"next_{name}" for name in self.state_names]

    @property
    def takes_ids(self) -> bool:
        return np.issubdtype(self.input_dtype, np.integer)

    def initial_state(self, batch_size: int | None = None) -> list:
        """Zero states, as Keras starts every sequence."""
        batch = self.batch_size or batch_size or 1
        return [np.zeros((batch, units), np.float32) for units in self.state_sizes]

    def step(self, inputs, state: list, *, extra: dict | None = None, check: bool = True):
        """One step: returns `(outputs, next_state)`. `extra`: further named inputs (a seq2seq
        decoder's encoder tensors); every output stays readable in `last_results`."""
        if len(state) != len(self.state_names):
            raise ValueError(
                f"{self.path.name} carries {len(self.state_names)} states; got {len(state)}. "
                "Start from initial_state()."
            )
        feeds = dict(extra or {})
        feeds.update(zip(self.state_names, state))
        feeds[MAIN_INPUT] = inputs
        results = self.last_results = self.model.run_named(feeds, check=check)
        return results[MAIN_OUTPUT], [results[name] for name in self._next_names]


_STATE_NAME = re.compile(r"state_(\d{1,4})")


def _state_names(model, path) -> list[str]:
    """The `state_0, state_1, ...` inputs in order, each `(batch, units)`; a file that names
    them otherwise (gaps, `state_abc`, another rank) is a ModelFileError naming the input."""
    names = sorted((name for name in model.inputs if name.startswith("state_")),
                   key=lambda name: (len(name), name))
    for index, name in enumerate(names):
        shape = model.inputs[name][0]
        if name != f"state_{index}" or not _STATE_NAME.fullmatch(name):
            raise ModelFileError(f"{str(path)!r}: state inputs must be state_0, state_1, ... in "
                                 f"order; got {names[:8]}.")
        if len(shape) != 2 or shape[1] is None or shape[1] < 1:
            raise ModelFileError(f"{str(path)!r}: state input {name!r} has shape {shape}; "
                                 "a state is (batch, units).")
    return names


def generate(step_model, prompt: str, length: int, vocabulary=None) -> str:
    """Greedily continues `prompt` by `length` symbols with a step model of a char (or word)
    model, carrying the state: no TensorFlow, one step per symbol.

    Args:
        step_model: a `StepModel` or the path of a step model file.
        vocabulary: a `keras_rnn.Vocabulary`; by default the one stored in the file.

    Returns:
        The prompt followed by the generated symbols, decoded as `Vocabulary.decode` does.
    """
    if not isinstance(step_model, StepModel):
        step_model = StepModel(step_model)
    if vocabulary is None:
        vocabulary = vocabulary_field(step_model.metadata, "vocabulary", step_model.path,
                                      required=False)
        if vocabulary is None:
            raise ValueError(
                f"{step_model.path.name} stores no vocabulary: pass vocabulary= or export "
                "with metadata=export.vocabulary_metadata(vocabulary)."
            )
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"`length` must be an integer >= 0, got {length!r}.")
    check_vocabulary_size(step_model.model, MAIN_OUTPUT, vocabulary, "vocabulary")
    ids = [int(i) for i in vocabulary.encode(prompt)]
    if not step_model.takes_ids and step_model.input_shape[-1] != len(vocabulary):
        raise ValueError(
            f"{step_model.path.name} takes {step_model.input_shape[-1]}-wide one-hot inputs "
            f"but the vocabulary has {len(vocabulary)} symbols: pass the model's vocabulary."
        )
    batch = step_model.batch_size or 1
    identity = np.eye(len(vocabulary), dtype=np.float32)
    state = step_model.initial_state(batch)

    def encoded(symbol_id):
        if step_model.takes_ids:
            return np.full((batch,), symbol_id, np.int32)
        return np.repeat(identity[symbol_id][None], batch, axis=0)

    outputs = None
    for symbol_id in ids:
        outputs, state = step_model.step(encoded(symbol_id), state, check=False)
    for index in range(length):
        ids.append(int(outputs[0].argmax()))
        if index + 1 < length:  # feed the new symbol for the next prediction
            outputs, state = step_model.step(encoded(ids[-1]), state, check=False)
    return vocabulary.decode(ids)
