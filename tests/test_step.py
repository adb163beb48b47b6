"""Streaming step models: fed step by step they compute what Keras computes on the whole
sequence, and the TF-free greedy generator writes exactly Keras's characters."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_outputs_close, first_fast, runtimes_for

from export import vocabulary_metadata
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import ModelFileError, StepModel, generate, operator_names
from export.streaming import export_step
from keras_rnn import build_model
from keras_rnn.sample import generate as keras_generate
from keras_rnn.structure import UnsupportedModelError

CELLS = ("simple_rnn", "lstm", "gru")
FORMATS = {"tflite": TFLITE_TOLERANCE, "onnx": ONNX_TOLERANCE}
ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
BATCH = 2


def _model(cell, *, num_layers=1, inputs="one_hot", return_sequences=True, **extra):
    import keras

    keras.utils.set_random_seed(11)
    if inputs == "embedding":
        extra["embedding_dim"] = 3
    return build_model(cell=cell, input_size=6, hidden_size=5, output_size=4,
                       num_layers=num_layers, inputs=inputs,
                       return_sequences=return_sequences, **extra)


def _sequence(model):
    rng = np.random.default_rng(3)
    if len(model.inputs[0].shape) == 2:  # ids; 0 is never fed (no padding when streaming)
        return rng.integers(1, 6, size=(BATCH, STEPS)).astype(np.int32)
    return rng.normal(size=(BATCH, STEPS, 6)).astype(np.float32)


def _stream(step_model, sequence):
    state = step_model.initial_state(len(sequence))
    outputs = []
    for t in range(sequence.shape[1]):
        output, state = step_model.step(sequence[:, t], state)
        outputs.append(output)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("inputs", ["one_hot", "embedding"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_step_by_step_equals_the_whole_sequence(tmp_path, cell, num_layers, inputs, fmt):
    model = _model(cell, num_layers=num_layers, inputs=inputs)
    path = export_step(model, tmp_path / f"m.step.{fmt}", batch_size=BATCH)
    sequence = _sequence(model)
    expected = np.asarray(model(sequence))
    for runtime in runtimes_for(path):
        step_model = StepModel(path, runtime=runtime)
        assert len(step_model.state_names) == num_layers * (2 if cell == "lstm" else 1)
        assert_outputs_close(f"{cell} step model ({runtime})", _stream(step_model, sequence),
                             expected, FORMATS[fmt])
    if fmt == "onnx":
        import onnx

        op_types = [node.op_type for node in onnx.load(path).graph.node]
        native = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
        assert op_types.count(native) == num_layers and "Loop" not in op_types
    else:
        assert not any(name.startswith("custom:") for name in operator_names(path.read_bytes()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_to_one_model_streams_to_its_last_output(tmp_path, fmt):
    model = _model("lstm", num_layers=2, return_sequences=False)
    step_model = StepModel(export_step(model, tmp_path / f"m.step.{fmt}", batch_size=BATCH))
    sequence = _sequence(model)
    streamed = _stream(step_model, sequence)[:, -1]
    assert_outputs_close(f"many-to-one step model ({fmt})", streamed, np.asarray(model(sequence)),
                         FORMATS[fmt])


def _lecture_cases(hihello_results, char_sequence_results, long_sentence_results):
    """(name, result, [(prompt, length)]) for each lecture char model."""
    from keras_rnn import datasets

    cases = []
    for name, results, length in (("hihello", hihello_results, 12),
                                  ("char_sequence", char_sequence_results, 20),
                                  ("long_sentence", long_sentence_results, 20)):
        for cell, result in results.items():
            prompts = [(symbol, length) for symbol in result["vocabulary"].symbols
                       if not symbol.startswith("<")]
            if name == "long_sentence":  # and the whole sentence from its first ten characters
                prompts.append((datasets.LONG_SENTENCE[:10], len(datasets.LONG_SENTENCE) - 10))
            cases.append((f"{name}_{cell}", result, prompts))
    return cases


def test_greedy_generation_from_step_files_equals_keras(
        tmp_path, hihello_results, char_sequence_results, long_sentence_results):
    mismatches, compared = [], 0
    for name, result, prompts in _lecture_cases(hihello_results, char_sequence_results,
                                                long_sentence_results):
        vocabulary = result["vocabulary"]
        expected = {prompt: keras_generate(result["model"], vocabulary, prompt, length)
                    for prompt, length in prompts}
        for fmt in FORMATS:
            step_model = StepModel(export_step(result["model"], tmp_path / f"{name}.{fmt}",
                                               metadata=vocabulary_metadata(vocabulary)))
            for prompt, length in prompts:
                got = generate(step_model, prompt, length)  # vocabulary read from the file
                compared += 1
                if got != expected[prompt]:
                    mismatches.append((name, fmt, prompt, expected[prompt], got))
    assert compared > 100
    assert not mismatches, "\n".join(map(repr, mismatches))


GENERATE_SCRIPT = """
import sys
from export.runtime import generate
print(generate(sys.argv[1], sys.argv[2], int(sys.argv[3])))
print("tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_generation_runs_without_tensorflow(tmp_path, char_sequence_results, fmt):
    result = char_sequence_results["gru"]
    path = export_step(result["model"], tmp_path / f"c.step.{fmt}",
                       metadata=vocabulary_metadata(result["vocabulary"]))
    completed = subprocess.run([sys.executable, "-c", GENERATE_SCRIPT, str(path), "if", "30"],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr
    text, tensorflow_loaded = completed.stdout.rstrip("\n").split("\n")
    assert tensorflow_loaded == "False"
    assert text == keras_generate(result["model"], result["vocabulary"], "if", 30)


def test_models_that_read_backwards_cannot_stream(tmp_path):
    model = _model("gru", bidirectional=True)
    for suffix in (".tflite", ".onnx"):
        with pytest.raises(UnsupportedModelError, match=r"cannot be streamed"):
            export_step(model, tmp_path / f"b{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_step_model_errors_are_clear(tmp_path, hihello_results):
    from export import export_onnx

    result = hihello_results["gru"]
    whole = export_onnx(result["model"], tmp_path / "whole.onnx")
    with pytest.raises(ModelFileError, match=r"is not a step model"):
        StepModel(whole)
    with pytest.raises(ValueError, match=r"must end in .tflite or .onnx"):
        export_step(result["model"], tmp_path / "m.step.bin")
    step_model = StepModel(export_step(result["model"], tmp_path / "s.tflite"))
    with pytest.raises(ValueError, match=r"stores no vocabulary"):
        generate(step_model, "h", 3)
    with pytest.raises(ValueError, match=r"carries 1 states; got 2"):
        step_model.step(np.zeros((1, 5), np.float32), step_model.initial_state() * 2)
    with pytest.raises(ValueError, match=r"expects inputs shape \(1, 5\); got \(1, 4\)"):
        step_model.step(np.zeros((1, 4), np.float32), step_model.initial_state())
    with pytest.raises(ValueError, match=r"not in the vocabulary|unknown"):
        generate(step_model, "hx", 3, vocabulary=result["vocabulary"])
    assert generate(step_model, "h", 5, vocabulary=result["vocabulary"]) == "hihello"[:6]


# -- graphs beyond the lecture chains (export.streaming) ----------------------------------------

def _branching_model():
    """Ids -> Embedding, then an LSTM + LayerNormalization branch added to a Dense branch, a
    GRU over the sum and a softmax head: streams (every layer acts on each step alone, or
    runs forwards), but is no chain."""
    import keras

    keras.utils.set_random_seed(4)
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 6)(ids)
    recurrent = keras.layers.LayerNormalization()(keras.layers.LSTM(8, return_sequences=True)(x))
    y = keras.layers.Add()([recurrent, keras.layers.Dense(8, activation="relu")(x)])
    y = keras.layers.GRU(5, return_sequences=True)(y)
    return keras.Model(ids, keras.layers.Dense(7, activation="softmax")(y))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_branching_graph_streams_step_by_step(tmp_path, fmt):
    import onnx

    model = _branching_model()
    ids = np.random.default_rng(2).integers(1, 20, (2, 9)).astype(np.int32)
    expected = np.asarray(model(ids))
    step_model = StepModel(export_step(model, tmp_path / f"m.step.{fmt}", batch_size=2))
    assert len(step_model.state_names) == 3  # LSTM h, c, then GRU h
    state = step_model.initial_state(2)
    tolerance = TFLITE_TOLERANCE if fmt == "tflite" else ONNX_TOLERANCE  # float32 sum order
    for t in range(ids.shape[1]):
        outputs, state = step_model.step(ids[:, t], state)
        assert_outputs_close(f"{fmt} step {t}", outputs, expected[:, t], tolerance)
    path = tmp_path / f"m.step.{fmt}"
    if fmt == "onnx":
        ops = {node.op_type for node in onnx.load(path).graph.node}
        assert {"LSTM", "GRU"} <= ops and not ops & {"Loop", "Scan"}, ops
    else:
        assert not any(name.startswith("custom:") for name in operator_names(path.read_bytes()))


def test_a_two_input_graph_streams_by_input_name(tmp_path):
    import keras

    from export.runtime import load

    keras.utils.set_random_seed(6)
    words = keras.Input((None,), dtype="int32", name="words")
    features = keras.Input((None, 3), name="features")
    x = keras.layers.Concatenate()([keras.layers.Embedding(10, 4)(words), features])
    model = keras.Model([words, features], keras.layers.SimpleRNN(5, return_sequences=True)(x))
    rng = np.random.default_rng(3)
    feeds = {"words": rng.integers(1, 10, (1, 6)).astype(np.int32),
             "features": rng.normal(size=(1, 6, 3)).astype(np.float32)}
    expected = np.asarray(model([feeds["words"], feeds["features"]]))
    step_file = load(export_step(model, tmp_path / "m.step.onnx"))
    state = np.zeros((1, 5), np.float32)
    for t in range(6):
        results = step_file.run_named({"words": feeds["words"][:, t],
                                       "features": feeds["features"][:, t], "state_0": state})
        assert_outputs_close(f"step {t}", results["outputs"], expected[:, t], ONNX_TOLERANCE)
        state = results["next_state_0"]


def test_graphs_that_read_other_steps_are_refused_naming_every_layer(tmp_path):
    import keras

    inputs = keras.Input((None, 3))
    x = keras.layers.Conv1D(4, 3, padding="causal", name="conv")(inputs)
    x = keras.layers.Bidirectional(keras.layers.GRU(2), name="both_ways")(x)
    x = keras.layers.RepeatVector(3)(x)
    x = keras.layers.LayerNormalization(axis=1, name="across_time")(x)
    model = keras.Model(inputs, keras.layers.LSTM(2)(x))
    for suffix in (".tflite", ".onnx"):
        with pytest.raises(UnsupportedModelError,
                           match=r"'conv' \(Conv1D\) is not one of the layers .*'both_ways' "
                                 r"\(Bidirectional\) reads the sequence backwards.*"
                                 r"'across_time' \(LayerNormalization on axis \[1\]\) works "
                                 r"across the time axis"):
            export_step(model, tmp_path / f"m.step{suffix}")
    assert list(tmp_path.iterdir()) == []


def _attending_decoder(source_len=None):
    """A decoder step graph as `export.seq2seq` builds one: target ids -> Embedding -> GRU,
    whose outputs attend (AdditiveAttention, masked) over context inputs given whole, then a
    softmax head over [outputs; context]; nonzero biases everywhere."""
    import keras

    keras.utils.set_random_seed(8)
    words = keras.Input((None,), dtype="int32", name="inputs")
    values = keras.Input((source_len, 6), name="values")
    keys = keras.Input((source_len, 6), name="keys")
    mask = keras.Input((source_len,), name="mask")
    decoded = keras.layers.GRU(6, return_sequences=True, bias_initializer="uniform")(
        keras.layers.Embedding(9, 4, mask_zero=True)(words))
    query = keras.layers.Dense(6, bias_initializer="uniform")(decoded)
    context = keras.layers.AdditiveAttention(use_scale=True)(
        [query, values, keys], mask=[None, keras.ops.greater(mask, 0.5)])
    head = keras.layers.Dense(9, activation="softmax", bias_initializer="uniform")(
        keras.layers.Concatenate()([decoded, context]))
    return keras.Model([words, values, keys, mask], head)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_context_inputs_are_fed_whole_at_every_step(tmp_path, fmt):
    from export.runtime import load

    source_len = 5
    model = _attending_decoder(source_len if fmt == "tflite" else None)
    rng = np.random.default_rng(4)
    words = rng.integers(1, 9, (1, 6)).astype(np.int32)
    context = {"values": rng.normal(size=(1, source_len, 6)).astype(np.float32),
               "keys": rng.normal(size=(1, source_len, 6)).astype(np.float32),
               # the last two source steps are padding: no attention weight there
               "mask": np.array([[1, 1, 1, 0, 0]], np.float32)}
    expected = np.asarray(model([words, context["values"], context["keys"], context["mask"]]))
    path = export_step(model, tmp_path / f"m.step.{fmt}", context_inputs=("values", "keys", "mask"))
    tolerance = TFLITE_TOLERANCE if fmt == "tflite" else ONNX_TOLERANCE  # float32 sum order
    for runtime in runtimes_for(path):
        step_file = load(path, runtime=runtime)
        assert step_file.inputs["values"][0][1:] == ((source_len if fmt == "tflite" else None), 6)
        state = np.zeros((1, 6), np.float32)
        for t in range(words.shape[1]):
            results = step_file.run_named({"inputs": words[:, t], "state_0": state, **context})
            assert_outputs_close(f"{runtime} step {t}", results["outputs"], expected[:, t],
                                 tolerance)
            state = results["next_state_0"]


def test_steps_that_read_other_steps_through_operations_or_attention_are_refused(tmp_path):
    import keras

    model = _attending_decoder()
    # without context inputs the attention reads the streamed values: refused
    with pytest.raises(UnsupportedModelError, match=r"AdditiveAttention\) is not one of"):
        export_step(model, tmp_path / "m.step.onnx")
    with pytest.raises(ValueError, match=r"context_inputs must name some of the model's inputs"):
        export_step(model, tmp_path / "m.step.onnx", context_inputs=("nothing",))
    # a keras.ops function over the time axis of a streamed tensor (a running sum)
    inputs = keras.Input((None, 3))
    summed = keras.ops.cumsum(keras.layers.SimpleRNN(3, return_sequences=True)(inputs), axis=1)
    with pytest.raises(UnsupportedModelError, match=r"operation 'Cumsum' on a streamed tensor"):
        export_step(keras.Model(inputs, summed), tmp_path / "m.step.onnx")
    # an element-wise one streams
    scaled = keras.ops.multiply(keras.layers.SimpleRNN(3, return_sequences=True)(inputs), 2.0)
    export_step(keras.Model(inputs, scaled), tmp_path / "m.step.onnx")
    assert [path.name for path in tmp_path.iterdir()] == ["m.step.onnx"]


@pytest.mark.parametrize("fmt", first_fast(list(FORMATS)))
def test_a_model_of_fixed_length_streams(tmp_path, fmt):
    """A model built on `keras.Input((12,))` (the sentiment lecture's fixed length) streams
    step by step: the step model takes one step, which Keras's own input check would refuse
    against the fixed length."""
    import keras

    from export.parity import verify_step

    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((12,), dtype="int32"), keras.layers.Embedding(9, 4, mask_zero=True),
        keras.layers.GRU(5, bias_initializer="uniform"), keras.layers.Dense(2)])
    path = export_step(model, tmp_path / f"m.step.{fmt}", batch_size=3)
    ids = np.random.default_rng(0).integers(1, 9, (3, 12)).astype(np.int32)
    streamed = _stream(StepModel(path), ids)[:, -1]  # the last step's output: the sequence's
    assert_outputs_close(fmt, streamed, np.asarray(model(ids)), FORMATS[fmt])
    report = verify_step(model, path)
    # judged on sequences of the model's own length
    assert report.passed and [shape[1] for shape in report.cases] == [12], str(report)
