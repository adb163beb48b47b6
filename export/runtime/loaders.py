"""Loading an exported file into its runtime: `load(path)` gives a `TFLiteModel` (the
standalone LiteRT interpreter, no Flex delegate) or an `ONNXModel` (ONNX Runtime), with one
interface: `run(inputs)`, `run_named({name: array})`, the inputs' shapes and dtypes, and the
metadata written at export, validated field by field (`export.runtime.metadata`: a file may
come from anyone). Inputs are checked before the runtime sees them (`export.runtime.inputs`);
runtime failures become `ValueError`s.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from export.runtime.checks import (
    ModelFileError,
    check_external_locations,
    check_tflite_in_child,
    external_tensors,
)
from export.runtime.inputs import checked_input, feed, runtime_errors
from export.runtime.metadata import (
    FORMS_METADATA,
    MAIN_INPUT,
    MAIN_OUTPUT,
    QUANTIZATION_METADATA,
    RESET_SIGNATURE,
    checked_metadata,
    has_variable_tensors,
    state_input_name,
    state_output_name,
    stateful_layout,
    tflite_metadata,
    tflite_tensors,
)

# ONNX input types -> NumPy (every numeric type Keras takes as an input dtype); another one
# (strings, bfloat16) is refused when the file is opened
_ONNX_TYPES = {f"tensor({name})": np.dtype(dtype) for name, dtype in (
    ("float", "float32"), ("float16", "float16"), ("double", "float64"), ("bool", "bool"),
    ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
    ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"))}


def _read_bytes(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {str(path)!r} does not exist.")
    data = path.read_bytes()
    if not data:
        raise ModelFileError(f"Model file {str(path)!r} is empty.")
    return data


class TFLiteModel:
    """A .tflite file in the standalone LiteRT interpreter (fixed input shape).

    Args:
        trusted: skip the check that runs a file once in a child process before this process
            opens it (`export.runtime.checks.check_tflite_in_child`): only for files you
            wrote, since a crafted file can crash the interpreter.
        xnnpack: run through LiteRT's default XNNPACK delegate (True) or its builtin kernels
            (False). Default: XNNPACK, except for an unrolled file of batch 1, which is timed
            on both when it is opened and runs on the faster (`kernel_times` keeps the
            medians, ms; a stateful file or one with string inputs, not run on zeros, keeps
            the builtin kernels). XNNPACK packs a copy of the weights for each operator, so an
            unrolled file's recurrent weights are copied once per step (11-14 MiB more memory
            for the medium models: 50 steps, hidden 128), and which kernels win at batch 1
            depends on the CPU's caches (`benchmarks/litert_kernels.py`): on a 2-core EPYC
            with 512 KB of L2 XNNPACK was 2.2-2.5x slower than the builtin kernels for LSTM and
            GRU; on one with 1 MiB of L2 and 32 MiB of L3 it was 1.4-1.9x faster. From batch 2
            on XNNPACK was as fast or faster on the first (1.2-1.5x at batch 4-8, 2x at 64), and in
            step files (one copy of each weight) 1.2-1.7x faster. Apps with their own
            interpreter choose the builtin kernels with `experimental_op_resolver_type=
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`.
    """

    format = "tflite"

    def __init__(self, path, *, num_threads: int = 1, trusted: bool = False,
                 allow_external_data: bool = False, runtime: str | None = None,
                 xnnpack: bool | None = None):
        # (allow_external_data: taken as every loader takes it; a .tflite file reads no other)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if runtime not in (None, "litert"):
            raise ValueError(f"A .tflite file runs in LiteRT here; got runtime={runtime!r}.")
        self.runtime = "litert"

        from keras_rnn.quiet import native_stderr_silenced

        self.path = Path(path)
        self.content = _read_bytes(path)
        if not trusted:
            check_tflite_in_child(self.content, self.path)
        def interpreter(delegate: bool):
            resolver = (OpResolverType.AUTO if delegate
                        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            try:
                with native_stderr_silenced():  # LiteRT announces its XNNPACK delegate
                    opened = Interpreter(model_content=self.content, num_threads=num_threads,
                                         experimental_op_resolver_type=resolver)
                    opened.allocate_tensors()
            except Exception as error:  # LiteRT raises ValueError/RuntimeError for bad files
                raise ModelFileError(
                    f"{str(self.path)!r} is not a valid .tflite model for the LiteRT "
                    f"interpreter: "
                    f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                ) from error
            return opened

        try:  # read first, to open the interpreter once for most files ...
            self.metadata, malformed = tflite_metadata(self.content, self.path), None
        except ModelFileError as error:
            self.metadata, malformed = {}, error
        unrolled = "unrolled" in self.metadata.get(FORMS_METADATA, "")
        self._interpreter = interpreter(not unrolled if xnnpack is None else xnnpack)
        if malformed is not None:  # ... but a file LiteRT refuses is reported as that first
            raise malformed
        self.state_layout = stateful_layout(self.metadata, self.path)
        self.kernel_times = None
        if xnnpack is None:  # an unrolled file: its batch read without the delegate
            batches = {int(detail["shape"][0])
                       for detail in self._interpreter.get_input_details() if len(detail["shape"])}
            xnnpack = not (unrolled and batches == {1})
            if unrolled and xnnpack:
                self._interpreter = interpreter(True)
            elif unrolled and _timeable(self._interpreter, self.state_layout):
                delegated = interpreter(True)
                self.kernel_times = _kernel_times(self._interpreter, delegated)
                if self.kernel_times and self.kernel_times["xnnpack"] < self.kernel_times["builtin"]:
                    self._interpreter, xnnpack = delegated, True
        self.xnnpack = xnnpack
        signatures = self._interpreter.get_signature_list()
        if self.state_layout and RESET_SIGNATURE not in signatures:
            raise ModelFileError(f"{str(self.path)!r} lists stateful layers in its metadata "
                                 f"but has no {RESET_SIGNATURE!r} signature to reset them.")
        serving = [key for key in signatures if key != RESET_SIGNATURE or not self.state_layout]
        if serving:  # named inputs and outputs (step models and newer exports)
            runner = self._interpreter.get_signature_runner(serving[0])
            # (a runner kept alive forbids the interpreter's own invoke(): kept only where
            # the file has several signatures and is run through it)
            self._runner = runner if self.state_layout else None
            self._inputs = dict(runner.get_input_details())
            self._outputs = dict(runner.get_output_details())
        else:
            self._inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
            self._outputs = {d["name"]: d for d in self._interpreter.get_output_details()}
        self._input_name = MAIN_INPUT if MAIN_INPUT in self._inputs else next(iter(self._inputs))
        self._output_name = (MAIN_OUTPUT if MAIN_OUTPUT in self._outputs
                             else next(iter(self._outputs)))
        self._input = self._inputs[self._input_name]
        self._output = self._outputs[self._output_name]
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        # A fused LSTM keeps its state in variable tensors across invoke() calls: reset them
        # before each run so every call starts from zero state, as the Keras model does.
        try:
            self._stateful = has_variable_tensors(self.content)
        except (struct.error, TypeError, IndexError, ValueError, AttributeError) as error:
            raise ModelFileError(f"{str(self.path)!r}: its tensor table is malformed "
                                 f"({type(error).__name__}).") from None
        # (the state of stateful=True layers lives in resource variables, which that reset
        # leaves alone: it is carried from call to call until reset_states())
        self.inputs = {name: (tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]))
                       for name, detail in self._inputs.items()}
        self.output_names = list(self._outputs)
        self.output_shapes = {name: tuple(int(d) for d in detail["shape"])
                              for name, detail in self._outputs.items()}

    def run(self, inputs) -> np.ndarray:
        """Runs one batch: `inputs` must have exactly `input_shape`."""
        inputs = checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        if self.state_layout:
            return self.run_named({self._input_name: inputs}, check=False)[self._output_name]
        if self._stateful:
            self._interpreter.reset_all_variables()
        self._interpreter.set_tensor(self._input["index"], inputs)
        with runtime_errors(self.path):
            self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))

    def run_named(self, feeds: dict, *, check: bool = True) -> dict:
        """Runs a file with several named inputs; returns every output by name."""
        if self.state_layout:  # several signatures: through the serving one's runner
            if check:
                feeds = {name: feed(feeds, name, self.inputs[name], self.path)
                         for name in self._inputs}
            with runtime_errors(self.path):
                results = self._runner(**{name: feeds[name] for name in self._inputs})
            return {name: np.array(results[name]) for name in self._outputs}
        set_tensor = self._interpreter.set_tensor
        for name, detail in self._inputs.items():
            value = feed(feeds, name, self.inputs[name], self.path) if check else feeds[name]
            set_tensor(detail["index"], value)
        if self._stateful:
            self._interpreter.reset_all_variables()
        with runtime_errors(self.path):
            self._interpreter.invoke()
        get_tensor = self._interpreter.get_tensor
        return {name: np.array(get_tensor(detail["index"]))
                for name, detail in self._outputs.items()}

    @property
    def stateful(self) -> bool:
        """True for a model with stateful=True layers: each run continues from the state the
        previous one left (per batch row), as the Keras model does, until `reset_states()`."""
        return bool(self.state_layout)

    def reset_states(self) -> None:
        """Zeroes the stateful layers' state (Keras's `layer.reset_state()`): runs the file's
        "reset" signature with zeros, which any LiteRT interpreter can do the same way."""
        if self.state_layout:
            runner = self._interpreter.get_signature_runner(RESET_SIGNATURE)
            zeros = {name: np.zeros(detail["shape"], detail["dtype"])
                     for name, detail in runner.get_input_details().items()}
            with runtime_errors(self.path):
                runner(**zeros)

    @property
    def quantized(self) -> bool:
        """True if any tensor is stored as int8 or float16 (a quantized export)."""
        from ai_edge_litert import schema_py_generated as schema

        reduced = {schema.TensorType.INT8, schema.TensorType.FLOAT16}
        return any(tensor.Type() in reduced for tensor in tflite_tensors(self.content))


class ONNXModel:
    """An .onnx file in ONNX Runtime (dynamic batch and time axes), or in another ONNX runtime
    (`runtime=`: "reference" or "openvino", see `export.runtime.engines`).

    Args:
        allow_external_data: read tensors that the file keeps in other files (ONNX external
            data), and then only from files inside the model's own folder. Off by default: a
            file someone else wrote could otherwise make the runtime read any file.
    """

    format = "onnx"
    quantized = False

    def __init__(self, path, *, num_threads: int = 1, trusted: bool = False,
                 allow_external_data: bool = False, runtime: str | None = None):
        # (trusted: taken as every loader takes it; ONNX Runtime refuses malformed files
        # itself: none of 455 structure-aware mutants tried killed the process)
        import onnxruntime

        from export.runtime.engines import ONNX_RUNTIMES, onnx_engine

        self.runtime = runtime or "onnxruntime"
        if self.runtime not in ONNX_RUNTIMES:
            raise ValueError(f"Unknown ONNX runtime {runtime!r}: expected one of "
                             f"{ONNX_RUNTIMES}.")

        self.path = Path(path)
        content = _read_bytes(path)
        external = external_tensors(content, self.path)
        if external and not allow_external_data:
            name, location = external[0]
            raise ModelFileError(
                f"{str(self.path)!r}: tensor {name!r} keeps its data in another file "
                f"({location!r}), which loading would read; refused. If you trust the file, "
                "load it with allow_external_data=True (read from the model's folder only).")
        if external:
            check_external_locations(external, self.path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # errors reach the caller as ValueError instead
        try:
            # by path when external data is allowed: ONNX Runtime then resolves it against
            # the model's folder (checked above), not the current directory
            self._session = onnxruntime.InferenceSession(
                str(self.path) if external else content, options,
                providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ModelFileError(
                f"{str(self.path)!r} is not a valid .onnx model for ONNX Runtime: "
                f"{str(error).splitlines()[0]}"
            ) from error
        # the signature and metadata are read with ONNX Runtime; `runtime` runs the file
        try:
            self._engine = onnx_engine(self.runtime, self.path, content, session=self._session,
                                       num_threads=num_threads)
        except ValueError:
            raise
        except Exception as error:
            raise ModelFileError(f"{str(self.path)!r} could not be opened in {self.runtime}: "
                                 f"{str(error).strip().splitlines()[0]}") from error
        try:
            metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        except UnicodeDecodeError as error:
            raise ModelFileError(
                f"{str(self.path)!r}: its metadata_props are not valid UTF-8 ({error}).") from None
        self.metadata = checked_metadata(metadata, self.path)
        # quantized by export.onnx.quantize (judged on decisions; a file without the field is
        # judged on values, the stricter bound)
        self.quantized = QUANTIZATION_METADATA in self.metadata
        unknown = [f"{item.name} ({item.type})" for item in self._session.get_inputs()
                   if item.type not in _ONNX_TYPES]
        if unknown:
            raise ModelFileError(f"{str(self.path)!r} takes inputs of types this runtime does "
                                 f"not feed: {', '.join(unknown)}; numeric tensors only.")
        self.inputs = {
            item.name: (tuple(d if isinstance(d, int) else None for d in item.shape),
                        _ONNX_TYPES[item.type])
            for item in self._session.get_inputs()
        }
        # the stateful layers' state: carried here from run to run, as LiteRT carries it
        self.state_layout = stateful_layout(self.metadata, self.path)
        self._state_names = [state_input_name(i) for i in range(len(self.state_layout))]
        self._next_names = [state_output_name(i) for i in range(len(self.state_layout))]
        missing = [name for name in self._state_names if name not in self.inputs]
        if missing:
            raise ModelFileError(f"{str(self.path)!r} lists {len(self.state_layout)} states in "
                                 f"its metadata but has no inputs {missing}.")
        self._states = None
        for name in self._state_names:
            del self.inputs[name]
        self._input_name = MAIN_INPUT if MAIN_INPUT in self.inputs else next(iter(self.inputs))
        self.input_shape, self.input_dtype = self.inputs[self._input_name]
        self.output_names = [item.name for item in self._session.get_outputs()
                             if item.name not in self._next_names]
        self.output_shapes = {item.name: tuple(d if isinstance(d, int) else None for d in item.shape)
                              for item in self._session.get_outputs()}

    @property
    def stateful(self) -> bool:
        """True for a model with stateful=True layers: each run continues from the state the
        previous one left (per batch row), as the Keras model does, until `reset_states()`.
        The file itself takes the state as inputs `state_N` and returns `next_state_N`."""
        return bool(self.state_layout)

    def reset_states(self) -> None:
        """Zeroes the stateful layers' state (Keras's `layer.reset_state()`)."""
        self._states = None

    def run(self, inputs) -> np.ndarray:
        """Runs one batch of any size and length."""
        inputs = checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        if self.state_layout:
            return self.run_named({self._input_name: inputs}, check=False)[self.output_names[0]]
        with runtime_errors(self.path):
            return self._engine.run(self.output_names[:1], {self._input_name: inputs})[0]

    def run_named(self, feeds: dict, *, check: bool = True) -> dict:
        """Runs a file with several named inputs; returns every output by name."""
        if check:
            feeds = {name: feed(feeds, name, spec, self.path) for name, spec in self.inputs.items()}
        if not self.state_layout:
            with runtime_errors(self.path):
                return dict(zip(self.output_names, self._engine.run(self.output_names, feeds)))
        batch = len(next(iter(feeds.values())))
        if self._states is None:
            self._states = [np.zeros((batch, units), np.float32) for _, units in self.state_layout]
        elif len(self._states[0]) != batch:
            raise ValueError(
                f"{self.path.name} is stateful and carries the state of {len(self._states[0])} "
                f"rows; got a batch of {batch}. Feed the same batch size on every call, or call "
                "reset_states() first.")
        feeds = {**feeds, **dict(zip(self._state_names, self._states))}
        with runtime_errors(self.path):
            results = self._engine.run(self.output_names + self._next_names, feeds)
        self._states = results[len(self.output_names):]
        return dict(zip(self.output_names, results))


def _timeable(interpreter, state_layout) -> bool:
    """True for a file that can be run on zeros to time it: numeric inputs and no state
    carried from call to call (a run would change it)."""
    return (not state_layout
            and all(np.issubdtype(np.dtype(detail["dtype"]), np.number)
                    for detail in interpreter.get_input_details()))


KERNEL_TIMING_RUNS = (3, 9)  # runs of each interpreter at least and at most ...
KERNEL_TIMING_BUDGET = 0.2  # ... and past the least, seconds spent in all


def _kernel_times(builtin, delegated) -> dict | None:
    """The median time (ms) of one run on zeros for each of two interpreters of the same
    file, run in turn so that both see the same load on the machine; None for a file that
    cannot run on zeros (it keeps the builtin kernels, and its own runs report why)."""
    import time

    times = {"builtin": [], "xnnpack": []}
    try:
        for interpreter in (builtin, delegated):
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"],
                                       np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()  # the first run allocates and packs: not timed
    except Exception:  # LiteRT's RuntimeError (a crafted file's missing data, say)
        return None
    started = time.perf_counter()
    least, most = KERNEL_TIMING_RUNS
    while len(times["builtin"]) < most and (
            len(times["builtin"]) < least
            or time.perf_counter() - started < KERNEL_TIMING_BUDGET):
        for name, interpreter in (("builtin", builtin), ("xnnpack", delegated)):
            began = time.perf_counter()
            interpreter.invoke()
            times[name].append((time.perf_counter() - began) * 1e3)
    return {name: float(np.median(values)) for name, values in times.items()}


def load(path, *, num_threads: int = 1, trusted: bool = False,
         allow_external_data: bool = False, runtime: str | None = None, **options):
    """Opens an exported `.tflite` or `.onnx` file for inference.

    A file may come from anyone: a `.tflite` file is first run once in a child process, so one
    that would crash the interpreter is refused instead (`trusted=True` skips that, about
    0.25 s, for files you wrote); an `.onnx` file that keeps tensors in other files is refused
    unless `allow_external_data=True`, which reads them from the model's folder only.
    `runtime` runs an `.onnx` file in another ONNX runtime ("reference", "openvino"; default
    ONNX Runtime) with the same interface. `options` go to the format's loader
    (`TFLiteModel`'s `xnnpack`).
    """
    from export.formats import format_of, resolve  # (imports no exporter or TensorFlow)

    try:
        loader = resolve(format_of(path).loader)
    except ValueError as error:
        raise ModelFileError(f"Unknown model file type: {error}") from None
    if runtime is not None:
        options["runtime"] = runtime
    return loader(path, num_threads=num_threads, trusted=trusted,
                  allow_external_data=allow_external_data, **options)


def read_metadata(path) -> dict:
    """The string key/values stored at export (e.g. `vocabulary`), for either format."""
    return dict(load(path).metadata)
