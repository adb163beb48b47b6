"""Running exported files with NumPy and the runtime only: no TensorFlow, no Keras.

This is what a device or a service imports. `load("model.tflite")` uses the standalone LiteRT
interpreter (`ai_edge_litert`, no Flex delegate); `load("model.onnx")` uses ONNX Runtime. Both
give the same small interface: `run(inputs) -> outputs`, the expected input shape and dtype,
and the metadata written at export (the vocabulary, so outputs can be decoded).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TFLITE_METADATA_NAME = "keras_rnn"  # see export/tflite.py: the flatbuffer metadata entry


class ModelFileError(ValueError):
    """A missing, unreadable or corrupt exported model file."""


def _read_bytes(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {str(path)!r} does not exist.")
    data = path.read_bytes()
    if not data:
        raise ModelFileError(f"Model file {str(path)!r} is empty.")
    return data


class TFLiteModel:
    """A .tflite file in the standalone LiteRT interpreter (fixed input shape)."""

    format = "tflite"

    def __init__(self, path, *, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.content = _read_bytes(path)
        try:
            self.metadata = _tflite_metadata(self.content)
            self._interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except Exception as error:
            raise ModelFileError(
                f"{str(self.path)!r} is not a valid .tflite model for the LiteRT interpreter: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from error
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])

    def run(self, inputs) -> np.ndarray:
        """Runs one batch: `inputs` must have exactly `input_shape`."""
        inputs = _checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        self._interpreter.set_tensor(self._input["index"], inputs)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))

    @property
    def quantized(self) -> bool:
        """True if any tensor is stored as int8 or float16 (a quantized export)."""
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAs(self.content, 0)
        reduced = {schema.TensorType.INT8, schema.TensorType.FLOAT16}
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for t in range(graph.TensorsLength()):
                if graph.Tensors(t).Type() in reduced:
                    return True
        return False


class ONNXModel:
    """An .onnx file in ONNX Runtime (dynamic batch and time axes)."""

    format = "onnx"
    quantized = False

    def __init__(self, path, *, num_threads: int = 1):
        import onnxruntime

        self.path = Path(path)
        content = _read_bytes(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                content, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ModelFileError(
                f"{str(self.path)!r} is not a valid .onnx model for ONNX Runtime: "
                f"{str(error).splitlines()[0]}"
            ) from error
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in model_input.shape)
        self.input_dtype = np.dtype(np.int32 if "int32" in model_input.type else
                                    np.int64 if "int64" in model_input.type else np.float32)

    def run(self, inputs) -> np.ndarray:
        """Runs one batch of any size and length."""
        inputs = _checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        return self._session.run(None, {self._input_name: inputs})[0]


def load(path, *, num_threads: int = 1):
    """Opens an exported `.tflite` or `.onnx` file for inference."""
    suffix = Path(path).suffix
    if suffix == ".tflite":
        return TFLiteModel(path, num_threads=num_threads)
    if suffix == ".onnx":
        return ONNXModel(path, num_threads=num_threads)
    raise ModelFileError(f"Unknown model file type {str(path)!r}: expected .tflite or .onnx.")


def read_metadata(path) -> dict:
    """The string key/values stored at export (e.g. `vocabulary`), for either format."""
    return dict(load(path).metadata)


def _tflite_metadata(content: bytes) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() and entry.Name().decode() == TFLITE_METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode())
    return {}


def _checked_input(inputs, expected_shape, dtype, path) -> np.ndarray:
    inputs = np.asarray(inputs)
    if inputs.ndim != len(expected_shape):
        raise ValueError(
            f"{Path(path).name} expects input of rank {len(expected_shape)} "
            f"{_shape_text(expected_shape)}; got shape {inputs.shape}."
        )
    for got, want in zip(inputs.shape, expected_shape):
        if want is not None and got != want:
            raise ValueError(
                f"{Path(path).name} expects input shape {_shape_text(expected_shape)}; got "
                f"{inputs.shape}. A .tflite file has a fixed batch and length: re-export with "
                "batch_size=/seq_len=, or feed that shape."
            )
    if np.issubdtype(dtype, np.integer):
        if not np.issubdtype(inputs.dtype, np.integer):
            raise ValueError(
                f"{Path(path).name} expects integer token ids; got {inputs.dtype} values."
            )
    return np.ascontiguousarray(inputs, dtype=dtype)


def _shape_text(shape) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
