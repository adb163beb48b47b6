"""Inputs checked before a runtime sees them (shape, dtype, ids in range, no empty axis: ONNX
Runtime aborts the process on some), and a runtime's own failure as a `ValueError`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


def feed(feeds: dict, name: str, spec, path) -> np.ndarray:
    if name not in feeds:
        raise ValueError(f"{Path(path).name} needs an input named {name!r}; got {sorted(feeds)}.")
    shape, dtype = spec
    return checked_input(feeds[name], shape, dtype, path, name=name)


def checked_input(inputs, expected_shape, dtype, path, *, name: str = "input") -> np.ndarray:
    inputs = np.asarray(inputs)
    if inputs.ndim != len(expected_shape):
        raise ValueError(
            f"{Path(path).name} expects {name} of rank {len(expected_shape)} "
            f"{_shape_text(expected_shape)}; got shape {inputs.shape}."
        )
    if 0 in inputs.shape:
        # ONNX Runtime aborts the whole process on an empty batch or time axis in its RNN
        # kernels: refuse it here, before the runtime sees it.
        raise ValueError(
            f"{Path(path).name} got {name} of shape {inputs.shape}, with an empty axis: give at "
            "least one row of at least one step.")
    for got, want in zip(inputs.shape, expected_shape):
        if want is not None and got != want:
            raise ValueError(
                f"{Path(path).name} expects {name} shape {_shape_text(expected_shape)}; got "
                f"{inputs.shape}. A .tflite file has a fixed batch and length: re-export with "
                "batch_size=/seq_len=, or feed that shape."
            )
    if np.dtype(dtype).kind == "S":  # a file that reads strings (a StringLookup's table)
        return _strings(inputs, path, name)
    if inputs.dtype.kind not in "biuf":
        raise ValueError(f"{Path(path).name} expects numbers for {name}; got {inputs.dtype} "
                         "values.")
    if np.issubdtype(dtype, np.integer):
        if not np.issubdtype(inputs.dtype, np.integer):
            raise ValueError(
                f"{Path(path).name} expects integer token ids for {name}; got {inputs.dtype} "
                "values."
            )
        # checked in the ids' own dtype, before the cast: 2**32 - 1 as uint32 would wrap to
        # -1 in int32 and read the last embedding row
        if inputs.min() < 0:  # ONNX Gather would read negative ids from the end of the table
            raise ValueError(f"{Path(path).name} got a negative token id ({inputs.min()}) for "
                             f"{name}; ids start at 0.")
        if int(inputs.max()) > np.iinfo(dtype).max:
            raise ValueError(f"{Path(path).name} got token id {int(inputs.max())} for {name}, "
                             f"beyond what its {np.dtype(dtype).name} input holds.")
    return np.ascontiguousarray(inputs, dtype=dtype)


def _strings(inputs, path, name) -> np.ndarray:
    """Text as the UTF-8 bytes LiteRT's string tensors hold (what TensorFlow's string inputs
    hold for a Keras model given Python strings). A NumPy bytes array drops trailing NUL
    bytes, so a token ending in one would be looked up as another token: refused."""
    if inputs.dtype.kind not in "SUO":
        raise ValueError(f"{Path(path).name} expects strings for {name}; got {inputs.dtype} "
                         "values.")
    encoded = []
    for value in inputs.reshape(-1).tolist():
        if isinstance(value, str):
            try:  # (TensorFlow refuses a string UTF-8 cannot encode, so Keras has no answer)
                value = value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{Path(path).name} got a string for {name} that is not valid "
                                 f"text (UTF-8 cannot encode {value!r}).") from None
        if not isinstance(value, bytes):
            raise ValueError(f"{Path(path).name} expects strings for {name}; got a "
                             f"{type(value).__name__} among them.")
        if value.endswith(b"\0"):
            raise ValueError(f"{Path(path).name} got a string ending in a NUL byte for {name}, "
                             "which a string tensor would lose.")
        encoded.append(value)
    return np.array(encoded, dtype=np.bytes_).reshape(inputs.shape)


@contextlib.contextmanager
def runtime_errors(path):
    """A runtime's own failure on an input (an id outside the vocabulary, say) as a ValueError
    that names the file."""
    try:
        yield
    except Exception as error:  # LiteRT raises RuntimeError, ONNX Runtime its own pybind errors
        lines = str(error).strip().splitlines()
        raise ValueError(f"{Path(path).name} could not run on this input: "
                         f"{lines[-1] if lines else type(error).__name__}") from error


def _shape_text(shape) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
