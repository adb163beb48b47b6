"""The calibration data of full-integer (int8) .tflite files, checked and batched.

The quantization modes themselves (converter settings, calibration needs, how `verify` judges
them) are rows of `export.formats.QUANTIZE_MODES`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from export.formats import QUANTIZE_MODES
from export.runtime import operator_names
from export.tflite.flatbuffer import builtin_codes, packed

QUANTIZE = tuple(QUANTIZE_MODES)  # None (float32), "dynamic", "float16", "int8"


def calibration_batches(fixed, data, batch_size: int, signature=None):
    """Checks the int8 calibration data (an array for one input; a list in input order or a
    dict by input name for several), then yields it in the file's fixed batches. Every check
    runs before conversion: the converter's calibrator ends the whole process (segfault) on
    non-finite ranges instead of raising."""
    names = [name for name, _, _ in fixed]
    if isinstance(data, dict):
        missing = sorted(set(names) - set(data))
        if missing:
            raise ValueError(f"representative_data lacks inputs {missing}; it has {sorted(data)}.")
        arrays = [data[name] for name in names]
    elif len(fixed) > 1:
        if not isinstance(data, (list, tuple)) or len(data) != len(fixed):
            raise ValueError(f"representative_data must hold one array per input {names}, as a "
                             "list in that order or a dict by name.")
        arrays = list(data)
    else:
        arrays = [data]
    checked = []
    for (name, shape, dtype), array in zip(fixed, arrays):
        array = np.asarray(array)
        label = "representative_data" + (f"[{name!r}]" if len(fixed) > 1 else "")
        expected = shape[1:]
        if array.ndim != len(shape) or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{label} has shape {array.shape}; expected (n, "
                f"{', '.join(map(str, expected))}) matching the exported input.")
        if len(array) == 0:
            raise ValueError(f"{label} has shape {array.shape}: no rows to calibrate on.")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{label} holds {array.dtype} values; expected numbers.")
        integer = np.dtype(dtype).kind in "iu"
        if integer and array.dtype.kind == "f":
            raise ValueError(f"{label} must be integer token ids for this model; got "
                             f"{array.dtype} values.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise ValueError(
                f"{label} holds {bad} NaN or infinite values; int8 ranges need finite "
                "calibration data. Remove or replace those values.")
        if integer and array.min() < 0:
            raise ValueError(f"{label} holds negative ids ({array.min()}); ids start at 0.")
        checked.append(array.astype(dtype))
    if len({len(array) for array in checked}) != 1:
        raise ValueError("representative_data has a different number of rows per input: "
                         f"{[len(array) for array in checked]}.")

    def batches():  # by input name: the converter orders a signature's inputs its own way
        for start in range(0, len(checked[0]), batch_size):
            chunks = {}
            for name, array in zip(names, checked):
                chunk = array[start:start + batch_size]
                if len(chunk) < batch_size:  # repeat rows to fill the fixed batch
                    chunk = np.resize(chunk, (batch_size,) + chunk.shape[1:])
                chunks[name] = chunk
            yield chunks if signature is None else (signature, chunks)

    return batches


@contextlib.contextmanager
def loops_calibrated():
    """The TFLite converter's int8 path with WHILE loops calibrated here.

    The converter's calibrator ends the process (SIGSEGV) on any model holding a WHILE loop,
    even when asked only to calibrate (TensorFlow issue 75140; measured with TensorFlow 2.20
    for SimpleRNN, LSTM and GRU), so int8 files had to be unrolled: 1.98x (LSTM) and 2.64x
    (GRU) the parameter count in bytes on the medium models, where the loop's int8 file is
    1.1-1.2x. Inside this block the converter's calibration step alone is replaced, for
    models with a WHILE loop, by `calibrated_ranges`, which records the same statistics (each
    activation's min and max over the calibration data) by running the float model in LiteRT
    and each loop's condition and body step by step; the converter's own quantizer then
    writes the file from them, as it does from its calibrator's."""
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        content = bytes(self._model_content)
        if "WHILE" not in operator_names(content):
            return original(self, dataset_gen)
        return calibrated_ranges(content, dataset_gen())

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def calibrated_ranges(content: bytes, samples) -> bytes:
    """`content` (a float .tflite) with each activation's min and max over `samples` (dicts
    by input name) stored in its tensors' quantization parameters, as the converter's
    calibrator stores them. The main graph runs whole; each WHILE loop in it runs again here
    one condition and one body at a time (each as a one-graph model of its own), from the
    loop inputs the main graph gave it, so every step's body tensors are seen."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    codes = builtin_codes(model)
    loops = [(op.builtinOptions.condSubgraphIndex, op.builtinOptions.bodySubgraphIndex, op)
             for op in model.subgraphs[0].operators
             if codes[op.opcodeIndex] == schema.BuiltinOperator.WHILE]
    for cond, body, _ in loops:
        if any(codes[op.opcodeIndex] == schema.BuiltinOperator.WHILE
               for index in (cond, body) for op in model.subgraphs[index].operators):
            raise ValueError("quantize='int8' cannot calibrate a loop inside a loop here: use "
                             "form='unrolled'.")
    alone = {index: _one_graph(model, index) for cond, body, _ in loops for index in (cond, body)}
    recorded = {graph: _activations(model, graph) for graph in [0] + [b for _, b, _ in loops]}
    ranges = {}  # (subgraph, tensor) -> [min, max]
    runners = _Runners()
    for sample in samples:
        main = runners.run(content, _ordered(model, sample))
        _record(ranges, 0, recorded[0], main)
        for cond, body, op in loops:
            state = [np.array(main.get_tensor(index)) for index in op.inputs]
            for _ in range(MAX_CALIBRATED_STEPS):
                done = runners.run(alone[cond], state)
                if not bool(done.get_tensor(model.subgraphs[cond].outputs[0])):
                    break
                stepped = runners.run(alone[body], state)
                _record(ranges, body, recorded[body], stepped)
                state = [np.array(stepped.get_tensor(index))
                         for index in model.subgraphs[body].outputs]
            else:
                raise ValueError(f"A WHILE loop ran more than {MAX_CALIBRATED_STEPS} steps in "
                                 "calibration.")
    for (graph, index), (low, high) in ranges.items():
        tensor = model.subgraphs[graph].tensors[index]
        quantization = tensor.quantization or schema.QuantizationParametersT()
        quantization.min, quantization.max = [low], [high]
        tensor.quantization = quantization
    return packed(model)


MAX_CALIBRATED_STEPS = 100_000  # a calibration loop that runs longer is broken


class _Runners:
    """LiteRT interpreters (builtin kernels, every tensor kept after a run) by model and input
    shapes: one per loop body, not one per step."""

    def __init__(self):
        self._open = {}

    def run(self, content: bytes, inputs: list):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        key = (id(content), tuple(np.shape(value) for value in inputs))
        interpreter = self._open.get(key)
        if interpreter is None:
            interpreter = Interpreter(
                model_content=content, experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            for detail, value in zip(interpreter.get_input_details(), inputs):
                if tuple(detail["shape"]) != np.shape(value):
                    interpreter.resize_tensor_input(detail["index"], np.shape(value))
            interpreter.allocate_tensors()
            self._open[key] = interpreter
        for detail, value in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
        interpreter.invoke()
        return interpreter


def _ordered(model, sample) -> list:
    """A calibration sample (a dict by input name, as `calibration_batches` yields it) in the
    main graph's input order, through the signature's names."""
    if not isinstance(sample, dict):
        return list(sample)
    signature = model.signatureDefs[0] if model.signatureDefs else None
    names = {}
    if signature is not None:
        names = {entry.tensorIndex: _text(entry.name) for entry in signature.inputs}
    graph = model.subgraphs[0]
    ordered = []
    for index in graph.inputs:
        name = names.get(index) or _text(graph.tensors[index].name)
        match = [key for key in sample if key == name or name.endswith(f"_{key}:0")
                 or name == f"serving_default_{key}:0"]
        if len(match) != 1:
            raise ValueError(f"Calibration input {name!r} is not one of {sorted(sample)}.")
        ordered.append(sample[match[0]])
    return ordered


def _activations(model, graph: int) -> list[int]:
    """The float tensors of subgraph `graph` whose ranges are recorded: all but constants (left
    to the quantizer, which reads the weights themselves)."""
    from tensorflow.lite.python import schema_py_generated as schema

    buffers = model.buffers
    return [index for index, tensor in enumerate(model.subgraphs[graph].tensors)
            if tensor.type == schema.TensorType.FLOAT32 and not (
                tensor.buffer < len(buffers) and buffers[tensor.buffer].data is not None
                and len(buffers[tensor.buffer].data) > 0)]


def _record(ranges: dict, graph: int, indices: list, interpreter) -> None:
    """Widens `ranges` with the values the tensors `indices` of subgraph `graph` hold after a
    run."""
    for index in indices:
        try:
            value = interpreter.get_tensor(index)
        except ValueError:  # a tensor with no data (an unused optional input)
            continue
        if value.size == 0:
            continue
        low, high = float(np.min(value)), float(np.max(value))
        known = ranges.get((graph, index))
        ranges[(graph, index)] = [low, high] if known is None else [
            min(known[0], low), max(known[1], high)]


def _one_graph(model, index: int) -> bytes:
    """Subgraph `index` of `model` as a model of its own (same operators and buffers)."""
    import copy

    alone = copy.copy(model)
    alone.subgraphs = [model.subgraphs[index]]
    alone.signatureDefs, alone.metadata = None, None
    return packed(alone)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
