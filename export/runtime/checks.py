"""Checks of a model file someone else may have written, made before a runtime sees it.

- An `.onnx` file can name *external data*: a tensor whose bytes live in another file, which
  ONNX Runtime reads from a path relative to the current directory when it is handed the
  file's bytes. `external_tensors` finds every such tensor by walking the protobuf wire format
  (the `onnx` package is not part of the TF-free runtime), so `load` can refuse the file or
  confine the reads to the model's own folder.
- A crafted `.tflite` file can kill the process inside the LiteRT interpreter (an operator
  reading tensor -1, an opcode whose kernel reads inputs the operator lacks: SIGSEGV, abort).
  LiteRT ships no flatbuffer verifier for the fields its kernels read, and such checks would
  have to know every kernel's arity, so `check_tflite_in_child` opens the file, allocates its
  tensors and runs it once on zeros in a child process first: a file that kills the child
  is refused, and the caller's process never runs it. Measured cost: about 0.25 s a file (a
  fresh interpreter process); files the exporters have just written skip it (`trusted=True`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class ModelFileError(ValueError):
    """A missing, unreadable or corrupt exported model file."""


# -- ONNX external data ---------------------------------------------------------------------

# Length-delimited fields that hold messages which can contain tensors, by message kind
# (field numbers of onnx.proto): where a TensorProto can sit anywhere in a model.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},  # graph, training_info, functions
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _FUNCTION: {7: _NODE},  # node
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTRIBUTE},  # attribute
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MAX_NESTING = 64  # graphs inside attributes inside graphs...: deeper is no model of ours


def external_tensors(content: bytes, path) -> list[tuple[str, str]]:
    """`(tensor name, location)` of every tensor of an ONNX model that keeps its data in
    another file.

    Raises:
        ModelFileError: the bytes are not a well-formed protobuf message, or nest deeper
            than MAX_NESTING.
    """
    found = []
    stack = [(_MODEL, 0, len(content), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ModelFileError(f"{str(path)!r}: its graphs nest more than {MAX_NESTING} deep.")
        if kind == _TENSOR:
            tensor = _external_tensor(content, start, end, path)
            if tensor is not None:
                found.append(tensor)
            continue
        children = _CHILDREN[kind]
        for number, value in _fields(content, start, end, path):
            if number in children and isinstance(value, tuple):
                stack.append((children[number], *value, depth + 1))
    return found


def _external_tensor(content, start, end, path):
    name, location, external = "", "", False
    for number, value in _fields(content, start, end, path):
        if number == _TENSOR_NAME and isinstance(value, tuple):
            name = _text(content, value)
        elif number == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
            external = True
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, tuple):
            external = True
            entry = dict(_fields(content, *value, path))
            if isinstance(entry.get(1), tuple) and _text(content, entry[1]) == "location":
                location = _text(content, entry[2]) if isinstance(entry.get(2), tuple) else ""
    return (name, location) if external else None


def _text(content, span) -> str:
    return bytes(content[span[0]:span[1]]).decode("utf-8", errors="replace")


def _fields(content, start, end, path):
    """Yields `(field number, value)`: an int for varints, `(start, end)` for length-delimited
    fields, None for fixed-width ones."""
    position = start
    while position < end:
        key, position = _varint(content, position, end, path)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(content, position, end, path)
        elif wire == 1:
            value, position = None, position + 8
        elif wire == 2:
            length, position = _varint(content, position, end, path)
            value, position = (position, position + length), position + length
        elif wire == 5:
            value, position = None, position + 4
        else:
            raise ModelFileError(f"{str(path)!r} is not a valid .onnx model: protobuf wire "
                                 f"type {wire} at byte {position}.")
        if position > end:
            raise ModelFileError(f"{str(path)!r} is not a valid .onnx model: a field runs past "
                                 "the end of its message.")
        yield number, value


def _varint(content, position, end, path):
    result = shift = 0
    while True:
        if position >= end or shift > 63:
            raise ModelFileError(f"{str(path)!r} is not a valid .onnx model: a truncated or "
                                 "overlong varint.")
        byte = content[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def check_external_locations(external, path) -> None:
    """External data may be read only from files inside the model's own folder: a location
    must be relative, free of `..`, and resolve (links followed) inside that folder."""
    folder = Path(os.path.realpath(Path(path).parent))
    for name, location in external:
        target = Path(os.path.realpath(folder / location)) if location else None
        if (not location or Path(location).is_absolute() or ".." in Path(location).parts
                or target is None or folder not in target.parents or not target.is_file()):
            raise ModelFileError(
                f"{str(path)!r}: tensor {name!r} keeps its data in {location!r}, which is not a "
                f"file inside the model's folder {str(folder)!r}; refused.")


# -- TFLite crash containment ---------------------------------------------------------------

_CHILD_CHECK = r"""
import sys
content = sys.stdin.buffer.read()
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def zeros(details):
    return np.zeros(details["shape"], details["dtype"])

# on both kernel sets the loader may run the file on: XNNPACK and the builtin kernels
for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
    def opened():
        return Interpreter(model_content=content, num_threads=1,
                           experimental_op_resolver_type=resolver)
    try:
        interpreter = opened()
        interpreter.allocate_tensors()
        signatures = list(interpreter.get_signature_list())
        if not signatures:
            for details in interpreter.get_input_details():
                interpreter.set_tensor(details["index"], zeros(details))
            interpreter.invoke()
        for key in signatures:  # each signature in an interpreter of its own
            runner = opened().get_signature_runner(key)
            runner(**{name: zeros(d) for name, d in runner.get_input_details().items()})
    except Exception:
        pass  # an error, not a crash: the caller's own load reports it
"""
CHILD_TIMEOUT = 120  # seconds; one run on zeros of the largest exported model takes a few


def check_tflite_in_child(content: bytes, path) -> None:
    """Opens and runs `content` once on zeros in a child process.

    Raises:
        ModelFileError: the child was killed by a signal (the file crashes the interpreter)
            or did not finish within CHILD_TIMEOUT seconds.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        completed = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD_CHECK], input=content, capture_output=True,
            timeout=CHILD_TIMEOUT, env=environment)
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"{str(path)!r} did not finish one run on zeros within {CHILD_TIMEOUT} s in a "
            "separate check process; refused as malformed.") from None
    if completed.returncode < 0:
        import signal

        name = signal.Signals(-completed.returncode).name
        raise ModelFileError(
            f"{str(path)!r} is not a valid .tflite model: it crashed the LiteRT interpreter "
            f"({name}) in a separate check process, so it is not opened here.")
