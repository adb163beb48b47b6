"""The TFLite exporter: quantized files, builtin-only checks, the time-loop forms, int8
calibration."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import CELLS, SEQ_LEN, SHAPES, assert_outputs_close, first_fast, lecture_model

from export import export_tflite, verify
from export.parity.tolerances import TFLITE_TOLERANCE
from export.runtime import load, operator_names
from export.tflite.flatbuffer import TFLiteConversionError, check_builtin_only
from keras_rnn import build_model

ROOT = Path(__file__).resolve().parents[1]


# -- the lecture models, quantized ------------------------------------------------------------

@pytest.mark.parametrize("quantize", [None, "dynamic", "float16", "int8"])
@pytest.mark.parametrize("cell", CELLS)
def test_quantized_hihello_still_says_ihello(tmp_path, hihello_results, cell, quantize):
    result = hihello_results[cell]
    path = export_tflite(result["model"], tmp_path / "h.tflite", quantize=quantize,
                         representative_data=result["x"])
    output = load(path).run(result["x"])
    assert result["vocabulary"].decode(output[0].argmax(-1)) == "ihello"
    report = verify(result["model"], path, result["x"])
    assert report.passed, str(report)
    if quantize in ("float16", "int8"):
        assert report.quantized and report.tolerance is None  # judged on decisions


@pytest.mark.parametrize("quantize", ["dynamic", "float16", "int8"])
@pytest.mark.parametrize("example", ["sentiment", "author"])
def test_quantized_many_to_one_models_keep_full_accuracy(
        tmp_path, sentiment_results, author_results, example, quantize):
    results = sentiment_results if example == "sentiment" else author_results
    for cell, result in results.items():
        path = export_tflite(result["model"], tmp_path / f"{cell}.tflite", quantize=quantize,
                             representative_data=result["x"])
        model = load(path)
        predicted = np.concatenate([model.run(row[None]) for row in result["x"]]).argmax(-1)
        np.testing.assert_array_equal(predicted, result["y"], err_msg=f"{example} {cell}")


def test_float16_file_is_smaller_for_a_medium_model(tmp_path):
    model = lecture_model("lstm", "many_to_many", "single", "one_hot", hidden_size=128)
    float32 = export_tflite(model, tmp_path / "f32.tflite", seq_len=SEQ_LEN)
    float16 = export_tflite(model, tmp_path / "f16.tflite", seq_len=SEQ_LEN, quantize="float16")
    dynamic = export_tflite(model, tmp_path / "dyn.tflite", seq_len=SEQ_LEN, quantize="dynamic")
    assert float16.stat().st_size < 0.6 * float32.stat().st_size
    assert dynamic.stat().st_size < 0.4 * float32.stat().st_size


@pytest.mark.slow
def test_int8_files_are_lean_for_microcontrollers(tmp_path):
    """A full-integer file keeps the tensors' names only at its inputs and outputs (the
    graph-path names were a third of the unrolled int8 LSTM file); the int8 WHILE loop (what
    "auto" writes) and the fused int8 LSTM are about one byte per parameter; every form keeps
    the decisions of new sequences."""
    import keras
    from ai_edge_litert import schema_py_generated as schema

    keras.utils.set_random_seed(4)
    inputs = keras.Input((SEQ_LEN, 16))
    x = keras.layers.LSTM(128, bias_initializer="uniform")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(6)(x))
    rng = np.random.default_rng(0)
    data, new = (rng.normal(size=(rows, SEQ_LEN, 16)).astype(np.float32) for rows in (32, 16))
    sizes = {}
    for form in ("auto", "unrolled", "fused"):
        path = export_tflite(model, tmp_path / f"{form}.tflite", quantize="int8", form=form,
                             representative_data=data)
        sizes[form] = path.stat().st_size
        flat = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
        graph = flat.subgraphs[0]
        named = {i for i, tensor in enumerate(graph.tensors) if tensor.name}
        assert named == set(graph.inputs) | set(graph.outputs), (form, len(named))
        # random weights, near-tied decisions included: measured 97-100% of these rows
        report = verify(model, path, new, min_agreement=0.9)
        assert report.passed and report.quantized, str(report)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in operator_names((tmp_path / "fused.tflite").read_bytes())
    assert "WHILE" in operator_names((tmp_path / "auto.tflite").read_bytes())
    # measured 1.06x (fused) and 1.08x (the loop) the parameter count (the target:
    # 1.5x); unrolled over 10 steps about 1.3x
    assert sizes["fused"] < 1.15 * model.count_params(), sizes
    assert sizes["auto"] < 1.15 * model.count_params(), sizes


def _loop_model(units=8):
    import keras

    keras.utils.set_random_seed(6)
    inputs = keras.Input((SEQ_LEN, 4))
    return keras.Model(inputs, keras.layers.GRU(units, return_sequences=True,
                                                bias_initializer="uniform")(inputs))


def test_the_loop_calibration_records_what_the_activations_hold(tmp_path):
    """`calibrated_ranges` (which replaces the converter's calibrator where that crashes, on
    WHILE loops) records each activation's true range: on a graph the converter's own
    calibrator takes (an unrolled float file), the input's and output's ranges are those of
    the data and of Keras's outputs, and every range lies within the one the converter's
    calibrator records. (That one is wider on some tensors: it logged a LOGISTIC output
    below 0, measured; it reads tensors whose arena memory other ops have reused.)"""
    from tensorflow.lite.python.optimize.calibrator import Calibrator

    from export.tflite.quantize import calibrated_ranges

    model = _loop_model()
    x = np.random.default_rng(2).normal(size=(6, SEQ_LEN, 4)).astype(np.float32)
    content = export_tflite(model, tmp_path / "f.tflite", form="unrolled").read_bytes()
    samples = [{"inputs": x[i:i + 1]} for i in range(len(x))]
    with warnings.catch_warnings():  # (the converter's calibrator's own deprecation notice)
        warnings.simplefilter("ignore")
        theirs = _ranges(Calibrator(content).calibrate(lambda: iter(samples)))
    ours = _ranges(calibrated_ranges(content, samples))
    assert len(theirs) > 20 and set(theirs) <= set(ours), (len(theirs), set(theirs) - set(ours))
    for key, (low, high) in theirs.items():
        assert low - 1e-6 <= ours[key][0] <= ours[key][1] <= high + 1e-6, (key, ours[key])
    flat = _flat(content)
    outputs = np.asarray(model(x))
    truth = {flat.subgraphs[0].inputs[0]: (x.min(), x.max()),
             flat.subgraphs[0].outputs[0]: (outputs.min(), outputs.max())}
    for index, (low, high) in truth.items():  # (float32 values: the same numbers)
        assert ours[(0, index)] == pytest.approx((low, high), abs=1e-6), index


def test_the_loop_calibration_sees_every_step_of_the_loop(tmp_path):
    """In a WHILE file, the loop body's state tensor is recorded over every step of every
    sample: its range is the range of the whole sequence of states Keras computes."""
    from export.tflite.quantize import calibrated_ranges

    model = _loop_model()
    x = np.random.default_rng(3).normal(size=(5, SEQ_LEN, 4)).astype(np.float32)
    content = export_tflite(model, tmp_path / "w.tflite", form="while").read_bytes()
    states = np.asarray(model(x))  # (rows, steps, units): every step's state
    ranges = _ranges(calibrated_ranges(content, [{"inputs": x[i:i + 1]} for i in range(5)]))
    bodies = {graph for graph, _ in ranges if graph > 0}
    assert bodies, "no loop body was calibrated"
    wanted = (float(states.min()), float(states.max()))
    found = [value for (graph, _), value in ranges.items()
             if graph in bodies and value == pytest.approx(wanted, abs=1e-5)]
    assert found, f"no body tensor spans the states' range {wanted}"


@pytest.mark.parametrize("cell", first_fast(["GRU", "LSTM", "SimpleRNN"]))
def test_an_int8_loop_file_runs_in_tensorflow_lite_for_microcontrollers(tmp_path, cell):
    """The int8 WHILE file (what "auto" writes for int8) of a model ending on the last state
    runs in the microcontroller interpreter with LiteRT's decisions: its WHILE, GATHER and
    STRIDED_SLICE kernels take it. (A sequence-returning layer's loop, which accumulates its
    outputs with CONCATENATION and SLICE, gave other numbers there: 0.12-0.42 off from the
    first step, measured; the README sends microcontrollers to the int8 step file.)"""
    import keras
    from tflite_micro.python.tflite_micro import runtime as micro

    keras.utils.set_random_seed(8)
    inputs = keras.Input((SEQ_LEN, 4))
    x = getattr(keras.layers, cell)(16, bias_initializer="uniform")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    data = np.random.default_rng(4).normal(size=(40, SEQ_LEN, 4)).astype(np.float32)
    path = export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                         representative_data=data[:24])
    assert "WHILE" in operator_names(path.read_bytes())
    interpreter = micro.Interpreter.from_bytes(path.read_bytes())
    lite = load(path)
    on_lite, on_micro = [], []
    for row in data[24:]:
        interpreter.set_input(row[None], 0)
        interpreter.invoke()
        on_micro.append(interpreter.get_output(0))
        on_lite.append(lite.run(row[None]))
    on_lite, on_micro = np.concatenate(on_lite), np.concatenate(on_micro)
    # the two interpreters' int8 kernels round a few values one quantization step apart
    # (measured up to 0.01 on the medium GRU/LSTM); every decision was the same
    agreement = float((on_lite.argmax(-1) == on_micro.argmax(-1)).mean())
    assert agreement >= 0.9, (agreement, float(np.abs(on_lite - on_micro).max()))


@pytest.mark.parametrize("quantize", first_fast([None, "int8"]))
def test_a_loops_zeros_are_computed_not_stored(tmp_path, quantize):
    """A sequence-returning layer's WHILE loop starts from a steps x batch x units constant of
    zeros, which the file computes with FILL instead of storing (1.6 MiB at batch 64 on the
    medium models): the float file still gives Keras's outputs, the int8 one its decisions."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SEQ_LEN, 4))
    x = keras.layers.GRU(32, return_sequences=True, bias_initializer="uniform")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    data = np.random.default_rng(6).normal(size=(16, SEQ_LEN, 4)).astype(np.float32)
    path = export_tflite(model, tmp_path / "m.tflite", batch_size=4, form="while",
                         quantize=quantize, representative_data=data[:8])
    content = path.read_bytes()
    assert {"WHILE", "FILL"} <= set(operator_names(content))
    zeros = [len(b.data) for b in _flat(content).buffers
             if b.data is not None and len(b.data) >= 1024 and not np.any(b.data)]
    assert not zeros, zeros  # (stored, the loop's zeros were 9 x 4 x 32 float32: 4608 bytes)
    if quantize is None:
        assert_outputs_close("FILL", load(path).run(data[8:12]), np.asarray(model(data[8:12])),
                             TFLITE_TOLERANCE)
    else:  # random weights, near-tied decisions included
        report = verify(model, path, data[8:], min_agreement=0.9)
        assert report.passed, str(report)


def _flat(content: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def _ranges(content: bytes) -> dict:
    """{(subgraph, tensor): (min, max)} as a calibrated flatbuffer stores them."""
    flat = _flat(content)
    return {(g, t): (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
            for g, graph in enumerate(flat.subgraphs) for t, tensor in enumerate(graph.tensors)
            if tensor.quantization is not None and tensor.quantization.min is not None
            and len(tensor.quantization.min)}


def test_flex_ops_are_detected_by_reading_the_flatbuffer(tmp_path):
    """Keras's own LiteRT export of a dynamic-length LSTM carries Flex TensorList ops, which
    the standalone interpreter refuses; our flatbuffer check must name and refuse them."""
    import keras

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4)])
    model.export(str(tmp_path / "keras.tflite"), format="litert", verbose=False)
    flatbuffer = (tmp_path / "keras.tflite").read_bytes()
    with pytest.raises(TFLiteConversionError, match=r"non-builtin ops \['custom:FlexTensorList"):
        check_builtin_only(flatbuffer)
    # Our own export of the same model (fixed length) is builtin-only and correct.
    ours = export_tflite(model, tmp_path / "ours.tflite", seq_len=6)
    check_builtin_only(ours.read_bytes())
    assert verify(model, ours).passed


def test_dynamic_length_model_asks_for_seq_len(tmp_path):
    model = build_model(cell="lstm", input_size=3, hidden_size=2)
    with pytest.raises(ValueError, match="pass seq_len=N"):
        export_tflite(model, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_representative_data(tmp_path):
    model = build_model(cell="lstm", input_size=3, hidden_size=2, seq_len=4)
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match=r"shape \(2, 4, 5\); expected \(n, 4, 3\)"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                      representative_data=np.zeros((2, 4, 5), np.float32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="Unknown quantize 'int4'"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int4")


# -- TFLite time-loop forms ----------------------------------------------------------------------

FORM_CASES = [(cell, "while", shape) for cell in CELLS for shape in SHAPES] + [
    pytest.param("lstm", "fused", shape, marks=pytest.mark.slow) for shape in SHAPES]


@pytest.mark.parametrize("cell, form, shape", FORM_CASES)
def test_every_tflite_form_passes_verify(tmp_path, cell, form, shape):
    model = lecture_model(cell, "many_to_many", shape, "one_hot")
    path = export_tflite(model, tmp_path / "m.tflite", batch_size=2, seq_len=SEQ_LEN, form=form)
    report = verify(model, path)  # several batches through one interpreter
    assert report.passed, str(report)
    ops = operator_names(path.read_bytes())
    assert ("UNIDIRECTIONAL_SEQUENCE_LSTM" in ops) == (form == "fused"), ops
    assert ("WHILE" in ops) == (form == "while"), ops
    assert not any(name.startswith("custom:") for name in ops)


@pytest.mark.slow
def test_fused_lstm_keeps_state_between_calls_unless_reset(tmp_path):
    """LiteRT carries the fused LSTM's state from one invoke() to the next; export.runtime
    resets it, a bare interpreter does not."""
    from ai_edge_litert.interpreter import Interpreter

    model = lecture_model("lstm", "many_to_many", "single", "one_hot")
    path = export_tflite(model, tmp_path / "m.tflite", seq_len=SEQ_LEN, form="fused")
    x = np.random.default_rng(0).normal(size=(1, SEQ_LEN, 6)).astype(np.float32)
    expected = np.asarray(model(x))
    exported = load(path)
    for _ in range(3):
        assert_outputs_close("fused, repeated call", exported.run(x), expected, TFLITE_TOLERANCE)
    bare = Interpreter(model_path=str(path))
    bare.allocate_tensors()
    results = []
    for _ in range(2):
        bare.set_tensor(bare.get_input_details()[0]["index"], x)
        bare.invoke()
        results.append(bare.get_tensor(bare.get_output_details()[0]["index"]).copy())
    assert np.abs(results[0] - expected).max() < TFLITE_TOLERANCE
    assert np.abs(results[1] - expected).max() > TFLITE_TOLERANCE  # the trap being avoided


@pytest.mark.slow
def test_forms_that_cannot_apply_are_refused(tmp_path):
    gru = lecture_model("gru", "many_to_many", "single", "one_hot")
    with pytest.raises(ValueError, match=r"form='fused' needs LSTM layers only"):
        export_tflite(gru, tmp_path / "g.tflite", seq_len=SEQ_LEN, form="fused")
    masked = lecture_model("lstm", "many_to_many", "single", "embedding_mask")
    with pytest.raises(TFLiteConversionError, match=r"did not fuse"):
        export_tflite(masked, tmp_path / "m.tflite", seq_len=SEQ_LEN, form="fused")
    with pytest.raises(ValueError, match=r"Unknown form 'scan'"):
        export_tflite(gru, tmp_path / "s.tflite", seq_len=SEQ_LEN, form="scan")
    assert list(tmp_path.iterdir()) == []


def test_a_huge_fixed_batch_is_refused_before_converting(tmp_path):
    model = lecture_model("gru", "many_to_one", "single", "one_hot")
    with pytest.raises(ValueError, match="values per activation"):
        export_tflite(model, tmp_path / "m.tflite", batch_size=100_000_000, seq_len=SEQ_LEN)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_auto_form_unrolls_short_sequences_and_loops_long_ones(tmp_path):
    from export.tflite.forms import MAX_AUTO_UNROLLED_CELL_STEPS as CELL_STEPS
    from export.tflite.forms import choose_form
    from keras_rnn.structure import read_model

    model = lecture_model("gru", "many_to_one", "single", "one_hot")
    structure = read_model(model).recurrent_layers
    assert choose_form(structure, SEQ_LEN) == "unrolled"
    assert choose_form(structure, CELL_STEPS) == "unrolled"
    assert choose_form(structure, CELL_STEPS + 1) == "while"
    # the cost is cell steps: a stacked bidirectional model loops at a quarter of the length
    deep = read_model(lecture_model("gru", "many_to_one", "bidirectional", "one_hot",
                             num_layers=2)).recurrent_layers
    assert choose_form(deep, CELL_STEPS // 4) == "unrolled"
    assert choose_form(deep, CELL_STEPS // 4 + 1) == "while"
    # int8 loops (the smallest and fastest int8 file), but for stateful models
    assert choose_form(structure, SEQ_LEN, quantize="int8") == "while"
    assert choose_form(structure, SEQ_LEN, quantize="int8", stateful=True) == "unrolled"
    long = CELL_STEPS + 200
    path = export_tflite(model, tmp_path / "long.tflite", seq_len=long)
    assert "WHILE" in operator_names(path.read_bytes())
    x = np.random.default_rng(1).normal(size=(1, long, 6)).astype(np.float32)
    assert_outputs_close(f"{long} steps, WHILE", load(path).run(x), np.asarray(model(x)),
                         TFLITE_TOLERANCE)


def test_int8_calibrates_every_input_of_a_multi_input_model(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    numbers = keras.Input((6, 2), name="numbers")
    embedded = keras.layers.Embedding(20, 4)(tokens)
    merged = keras.layers.Concatenate()([embedded, numbers])
    model = keras.Model([tokens, numbers],
                        keras.layers.Dense(3, activation="softmax")(keras.layers.GRU(8)(merged)))
    rng = np.random.default_rng(0)
    data = {"tokens": rng.integers(0, 20, (16, 6)).astype(np.int32),
            "numbers": rng.normal(size=(16, 6, 2)).astype(np.float32)}
    path = export_tflite(model, tmp_path / "m.tflite", quantize="int8", representative_data=data)
    exported = load(path)
    assert exported.quantized and sorted(exported.inputs) == ["numbers", "tokens"]
    outputs = exported.run_named({name: value[:1] for name, value in data.items()})
    assert outputs["outputs"].shape == (1, 3)
    with pytest.raises(ValueError, match=r"lacks inputs \['numbers'\]"):
        export_tflite(model, tmp_path / "n.tflite", quantize="int8",
                      representative_data={"tokens": data["tokens"]})
