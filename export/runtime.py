"""Running exported files with NumPy and the runtime only: no TensorFlow, no Keras.

This is what a device or a service imports. `load("model.tflite")` uses the standalone LiteRT
interpreter (`ai_edge_litert`, no Flex delegate); `load("model.onnx")` uses ONNX Runtime. Both
give the same small interface: `run(inputs) -> outputs`, the expected input shape and dtype,
and the metadata written at export (the vocabulary, so outputs can be decoded).

`StepModel` runs a streaming step model (`export.step`) with the state carried by the caller,
and `generate` continues a prompt greedily with one, symbol by symbol.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

TFLITE_METADATA_NAME = "keras_rnn"  # see export/tflite.py: the flatbuffer metadata entry
FORMS_METADATA = "recurrent_forms"  # JSON {layer name: the form its time loop got}
MAIN_INPUT, MAIN_OUTPUT = "inputs", "outputs"
MAX_TRANSLATION_LENGTH = 1000  # target words a translator writes at most (metadata bound)
# A model with stateful=True layers keeps their state from one call to the next. A .tflite
# file keeps it in resource variables inside the file (its "reset" signature zeroes them); an
# .onnx file, which holds nothing between runs, takes it as inputs state_0, state_1, ... and
# returns next_state_0, ... ; `STATEFUL_METADATA` lists them, JSON [[label, units], ...].
STATEFUL_METADATA = "stateful_states"
RESET_SIGNATURE = "reset"


def state_input_name(index: int) -> str:
    """The name of a file's `index`-th state input (step models, stateful ONNX files)."""
    return f"state_{index}"


def state_output_name(index: int) -> str:
    """The name of a file's `index`-th next-state output."""
    return f"next_state_{index}"


_ONNX_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
               "tensor(float)": np.float32}


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

        from keras_rnn.quiet import native_stderr_silenced

        self.path = Path(path)
        self.content = _read_bytes(path)
        try:
            with native_stderr_silenced():  # LiteRT announces its XNNPACK delegate on stderr
                self._interpreter = Interpreter(model_content=self.content,
                                                num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except Exception as error:  # LiteRT raises ValueError/RuntimeError for bad files
            raise ModelFileError(
                f"{str(self.path)!r} is not a valid .tflite model for the LiteRT interpreter: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from error
        self.metadata = _tflite_metadata(self.content, self.path)
        signatures = self._interpreter.get_signature_list()
        self.state_layout = _state_layout(self.metadata, self.path)
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
        self._input = self._inputs.get(MAIN_INPUT) or next(iter(self._inputs.values()))
        self._output = self._outputs.get(MAIN_OUTPUT) or next(iter(self._outputs.values()))
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        # A fused LSTM keeps its state in variable tensors across invoke() calls: reset them
        # before each run so every call starts from zero state, as the Keras model does.
        self._stateful = _has_variable_tensors(self.content)
        # (the state of stateful=True layers lives in resource variables, which that reset
        # leaves alone: it is carried from call to call until reset_states())
        self.inputs = {name: (tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]))
                       for name, detail in self._inputs.items()}
        self.output_names = list(self._outputs)
        self.output_shapes = {name: tuple(int(d) for d in detail["shape"])
                              for name, detail in self._outputs.items()}

    def run(self, inputs) -> np.ndarray:
        """Runs one batch: `inputs` must have exactly `input_shape`."""
        inputs = _checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        if self.state_layout:
            name = next(name for name, detail in self._inputs.items() if detail is self._input)
            return self.run_named({name: inputs}, check=False)[
                next(name for name, detail in self._outputs.items() if detail is self._output)]
        if self._stateful:
            self._interpreter.reset_all_variables()
        self._interpreter.set_tensor(self._input["index"], inputs)
        with _runtime_errors(self.path):
            self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))

    def run_named(self, feeds: dict, *, check: bool = True) -> dict:
        """Runs a file with several named inputs; returns every output by name."""
        if self.state_layout:  # several signatures: through the serving one's runner
            if check:
                feeds = {name: _feed(feeds, name, self.inputs[name], self.path)
                         for name in self._inputs}
            with _runtime_errors(self.path):
                results = self._runner(**{name: feeds[name] for name in self._inputs})
            return {name: np.array(results[name]) for name in self._outputs}
        set_tensor = self._interpreter.set_tensor
        for name, detail in self._inputs.items():
            value = _feed(feeds, name, self.inputs[name], self.path) if check else feeds[name]
            set_tensor(detail["index"], value)
        if self._stateful:
            self._interpreter.reset_all_variables()
        with _runtime_errors(self.path):
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
            with _runtime_errors(self.path):
                runner(**zeros)

    @property
    def quantized(self) -> bool:
        """True if any tensor is stored as int8 or float16 (a quantized export)."""
        from ai_edge_litert import schema_py_generated as schema

        reduced = {schema.TensorType.INT8, schema.TensorType.FLOAT16}
        return any(tensor.Type() in reduced for tensor in _tflite_tensors(self.content))


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
        options.log_severity_level = 4  # errors reach the caller as ValueError instead
        try:
            self._session = onnxruntime.InferenceSession(
                content, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ModelFileError(
                f"{str(self.path)!r} is not a valid .onnx model for ONNX Runtime: "
                f"{str(error).splitlines()[0]}"
            ) from error
        try:
            metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        except UnicodeDecodeError as error:
            raise ModelFileError(
                f"{str(self.path)!r}: its metadata_props are not valid UTF-8 ({error}).") from None
        self.metadata = checked_metadata(metadata, self.path)
        self.inputs = {
            item.name: (tuple(d if isinstance(d, int) else None for d in item.shape),
                        np.dtype(_ONNX_TYPES.get(item.type, np.float32)))
            for item in self._session.get_inputs()
        }
        # the stateful layers' state: carried here from run to run, as LiteRT carries it
        self.state_layout = _state_layout(self.metadata, self.path)
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
        inputs = _checked_input(inputs, self.input_shape, self.input_dtype, self.path)
        if self.state_layout:
            return self.run_named({self._input_name: inputs}, check=False)[self.output_names[0]]
        with _runtime_errors(self.path):
            return self._session.run(None, {self._input_name: inputs})[0]

    def run_named(self, feeds: dict, *, check: bool = True) -> dict:
        """Runs a file with several named inputs; returns every output by name."""
        if check:
            feeds = {name: _feed(feeds, name, spec, self.path) for name, spec in self.inputs.items()}
        if not self.state_layout:
            with _runtime_errors(self.path):
                return dict(zip(self.output_names, self._session.run(self.output_names, feeds)))
        batch = len(next(iter(feeds.values())))
        if self._states is None:
            self._states = [np.zeros((batch, units), np.float32) for _, units in self.state_layout]
        elif len(self._states[0]) != batch:
            raise ValueError(
                f"{self.path.name} is stateful and carries the state of {len(self._states[0])} "
                f"rows; got a batch of {batch}. Feed the same batch size on every call, or call "
                "reset_states() first.")
        feeds = {**feeds, **dict(zip(self._state_names, self._states))}
        with _runtime_errors(self.path):
            results = self._session.run(self.output_names + self._next_names, feeds)
        self._states = results[len(self.output_names):]
        return dict(zip(self.output_names, results))


def _state_layout(metadata: dict, path) -> list:
    """The `STATEFUL_METADATA` field: `[(label, units), ...]`, empty for a stateless file."""
    text = metadata.get(STATEFUL_METADATA)
    if text is None:
        return []
    try:
        layout = json.loads(text)
    except json.JSONDecodeError:
        layout = None

    def is_pair(entry):
        return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and not isinstance(entry[1], bool)
                and 0 < entry[1] <= 1 << 20)

    if not isinstance(layout, list) or not layout or not all(map(is_pair, layout)):
        raise ModelFileError(f"{str(path)!r}: metadata field {STATEFUL_METADATA!r} must be a "
                             f"JSON list of [label, units] pairs; got {text[:80]!r}.")
    return [(label, units) for label, units in layout]


def load(path, *, num_threads: int = 1):
    """Opens an exported `.tflite` or `.onnx` file for inference."""
    suffix = Path(path).suffix
    if suffix == ".tflite":
        return TFLiteModel(path, num_threads=num_threads)
    if suffix == ".onnx":
        return ONNXModel(path, num_threads=num_threads)
    raise ModelFileError(f"Unknown model file type {str(path)!r}: expected .tflite or .onnx.")


class StepModel:
    """A streaming step model (`export.step.export_step`): one step's input and the state in,
    that step's output and the next state out. The caller carries the state."""

    def __init__(self, path, *, num_threads: int = 1):
        self.model = load(path, num_threads=num_threads)
        self.path = self.model.path
        self.metadata = self.model.metadata
        self.state_names = sorted((name for name in self.model.inputs if name.startswith("state_")),
                                  key=lambda name: int(name.split("_")[1]))
        if MAIN_INPUT not in self.model.inputs or not self.state_names or self.model.stateful:
            raise ModelFileError(
                f"{str(self.path)!r} is not a step model (no 'inputs' and 'state_N' inputs): "
                "write one with export.step.export_step."
            )
        self.input_shape, self.input_dtype = self.model.inputs[MAIN_INPUT]
        self.state_sizes = [self.model.inputs[name][0][1] for name in self.state_names]
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


class Translator:
    """Greedy translation from an exported seq2seq encoder and decoder step
    (`export.seq2seq.export_translator`), without TensorFlow."""

    ENCODER_TENSORS = ("encoder_outputs", "encoder_keys", "source_mask")

    def __init__(self, encoder_path, decoder_path, *, num_threads: int = 1):
        self.encoder = load(encoder_path, num_threads=num_threads)
        self.decoder = StepModel(decoder_path, num_threads=num_threads)
        metadata = self.decoder.metadata
        if "source_vocabulary" not in metadata or "vocabulary" not in metadata:
            raise ModelFileError(
                f"{str(self.decoder.path)!r} carries no vocabularies: write the files with "
                "export.seq2seq.export_translator."
            )
        self.source = vocabulary_field(metadata, "source_vocabulary", self.decoder.path)
        self.target = vocabulary_field(metadata, "vocabulary", self.decoder.path)
        self.max_length = metadata_int(metadata, "max_length", 20, self.decoder.path,
                                       low=1, high=MAX_TRANSLATION_LENGTH)
        check_vocabulary_size(self.decoder.model, MAIN_OUTPUT, self.target, "vocabulary")
        if "source" not in self.encoder.inputs:
            raise ModelFileError(f"{str(self.encoder.path)!r} is not a seq2seq encoder.")
        self.source_len = self.encoder.inputs["source"][0][1]  # None: any length (ONNX)
        self.attention = None  # (written words, source words) weights of the last call

    def translate(self, sentence: str, *, max_length: int | None = None) -> list[str]:
        """The target words, `<eos>` included when the model wrote it.

        Raises:
            ValueError: for a word outside the source vocabulary (naming it), or a sentence
                longer than a fixed-length (TFLite) encoder takes.
        """
        ids = [int(i) for i in self.source.encode(sentence)]
        if self.source_len is not None:
            if len(ids) > self.source_len:
                raise ValueError(
                    f"{self.encoder.path.name} takes at most {self.source_len} source words; "
                    f"{sentence!r} has {len(ids)}. Re-export with a larger source_len."
                )
            ids += [self.source.pad_id] * (self.source_len - len(ids))
        encoded = self.encoder.run_named({"source": np.asarray([ids], np.int32)})
        state = [encoded[f"final_{name}"] for name in self.decoder.state_names]
        extra = {name: encoded[name] for name in self.ENCODER_TENSORS
                 if name in self.decoder.model.inputs}
        token, words, weights = self.target.bos_id, [], []
        for _ in range(max_length or self.max_length):
            probabilities, state = self.decoder.step(
                np.asarray([token], np.int32), state, extra=extra, check=False)
            token = int(probabilities[0].argmax())
            words.append(self.target.symbols[token])
            if "attention_weights" in self.decoder.last_results:
                weights.append(self.decoder.last_results["attention_weights"][0])
            if token == self.target.eos_id:
                break
        self.attention = np.asarray(weights) if weights else None
        return words


def read_metadata(path) -> dict:
    """The string key/values stored at export (e.g. `vocabulary`), for either format."""
    return dict(load(path).metadata)


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes a .tflite file uses: builtin names, or `custom:NAME` (Flex ops are
    custom ops named `Flex...`). Reads the flatbuffer with LiteRT's schema, no TensorFlow."""
    from ai_edge_litert import schema_py_generated as schema

    builtin_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append(f"custom:{code.CustomCode().decode()}")
        else:
            names.append(builtin_names.get(builtin, f"builtin:{builtin}"))
    return names


def _tflite_tensors(content: bytes):
    """Every tensor of every subgraph of a .tflite flatbuffer (LiteRT's own schema)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            yield graph.Tensors(t)


def _has_variable_tensors(content: bytes) -> bool:
    return any(tensor.IsVariable() for tensor in _tflite_tensors(content))


def _tflite_metadata(content: bytes, path) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() and entry.Name().decode(errors="replace") == TFLITE_METADATA_NAME:
            data = bytes(model.Buffers(entry.Buffer()).DataAsNumpy())
            try:
                metadata = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ModelFileError(
                    f"{str(path)!r}: its {TFLITE_METADATA_NAME!r} metadata is not UTF-8 JSON "
                    f"({error}).") from None
            return checked_metadata(metadata, path)
    return {}


def vocabulary_field(metadata: dict, key: str, path, *, required: bool = True):
    """The `keras_rnn.Vocabulary` in a metadata field, or None when absent and not required."""
    from keras_rnn.vocab import Vocabulary

    if key not in metadata:
        if not required:
            return None
        raise ModelFileError(f"{str(path)!r} carries no {key!r} in its metadata.")
    try:
        return Vocabulary.from_json(metadata[key])
    except ValueError as error:
        raise ModelFileError(f"{str(path)!r}: metadata field {key!r}: {error}") from None


def check_vocabulary_size(model, output: str, vocabulary, key: str) -> None:
    """A vocabulary decodes an output only if it has one symbol per output unit."""
    units = model.output_shapes.get(output, (None,))[-1]
    if units is not None and units != len(vocabulary):
        raise ModelFileError(
            f"{str(model.path)!r}: output {output!r} has {units} units but the {key!r} in its "
            f"metadata has {len(vocabulary)} symbols; the file and its vocabulary do not belong "
            "together.")


def checked_metadata(metadata, path) -> dict:
    """Metadata read from a file must be string keys and string values (what the exporters
    write); anything else is a ModelFileError naming the file and the field."""
    if not isinstance(metadata, dict):
        raise ModelFileError(
            f"{str(path)!r}: its metadata must be a JSON object of strings; got "
            f"{type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ModelFileError(
                f"{str(path)!r}: metadata field {key!r} must be a string; got "
                f"{type(value).__name__}.")
    return dict(metadata)


def metadata_int(metadata: dict, key: str, default: int, path, *, low: int, high: int) -> int:
    """An integer field of a file's metadata, bounded: a file someone else wrote cannot make a
    loop run for minutes or allocate without limit."""
    text = metadata.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ModelFileError(
            f"{str(path)!r}: metadata field {key!r} must be an integer; got {text!r}.") from None
    if not low <= value <= high:
        raise ModelFileError(
            f"{str(path)!r}: metadata field {key!r} is {value}; expected {low} to {high}.")
    return value


def _feed(feeds: dict, name: str, spec, path) -> np.ndarray:
    if name not in feeds:
        raise ValueError(f"{Path(path).name} needs an input named {name!r}; got {sorted(feeds)}.")
    shape, dtype = spec
    return _checked_input(feeds[name], shape, dtype, path, name=name)


def _checked_input(inputs, expected_shape, dtype, path, *, name: str = "input") -> np.ndarray:
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
    if inputs.dtype.kind not in "biuf":
        raise ValueError(f"{Path(path).name} expects numbers for {name}; got {inputs.dtype} "
                         "values.")
    if np.issubdtype(dtype, np.integer):
        if not np.issubdtype(inputs.dtype, np.integer):
            raise ValueError(
                f"{Path(path).name} expects integer token ids for {name}; got {inputs.dtype} "
                "values."
            )
        if inputs.min() < 0:  # ONNX Gather would read negative ids from the end of the table
            raise ValueError(f"{Path(path).name} got a negative token id ({inputs.min()}) for "
                             f"{name}; ids start at 0.")
    return np.ascontiguousarray(inputs, dtype=dtype)


@contextlib.contextmanager
def _runtime_errors(path):
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
