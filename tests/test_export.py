"""Export to TFLite and ONNX, verified in the real runtimes (LiteRT, ONNX Runtime)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_outputs_close

from export import export_onnx, export_tflite, verify, vocabulary_metadata
from export.parity import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import ModelFileError, load
from export.tflite import TFLiteConversionError, check_builtin_only, operator_names
from keras_rnn import build_model
from keras_rnn.structure import UnsupportedModelError

CELLS = ("simple_rnn", "lstm", "gru")
SHAPES = {"single": dict(), "stacked": dict(num_layers=2), "bidirectional": dict(bidirectional=True)}
INPUTS = {"one_hot": dict(), "embedding_mask": dict(inputs="embedding", embedding_dim=4,
                                                     mask_zero=True)}
SEQ_LEN = 9
ROOT = Path(__file__).resolve().parents[1]


def _model(cell, outputs, shape, inputs, **extra):
    import keras

    keras.utils.set_random_seed(7)
    return build_model(**{"cell": cell, "input_size": 6, "hidden_size": 5, "output_size": 4,
                          "return_sequences": outputs == "many_to_many", **SHAPES[shape],
                          **INPUTS[inputs], **extra})


@pytest.mark.parametrize("inputs", INPUTS)
@pytest.mark.parametrize("shape", [  # the fast tier keeps one layer; stacks in the full suite
    shape if shape == "single" else pytest.param(shape, marks=pytest.mark.slow)
    for shape in SHAPES])
@pytest.mark.parametrize("outputs", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("cell", CELLS)
def test_exports_pass_verify_in_both_runtimes(tmp_path, cell, outputs, shape, inputs):
    model = _model(cell, outputs, shape, inputs)
    tflite = export_tflite(model, tmp_path / "m.tflite", batch_size=2, seq_len=SEQ_LEN)
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    for path, tolerance in ((tflite, TFLITE_TOLERANCE), (onnx_path, ONNX_TOLERANCE)):
        report = verify(model, path)
        assert report.passed, str(report)
        assert report.tolerance == tolerance and not report.quantized
        assert len(report.cases) >= 2  # several batches / lengths, never a single input
    # The ONNX graph holds the native recurrent operator and no generic Loop or Scan.
    import onnx

    op_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    native = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    assert op_types.count(native) == (2 if shape == "stacked" else 1), op_types
    assert "Loop" not in op_types and "Scan" not in op_types
    assert not any(name.startswith("custom:") for name in operator_names(tflite.read_bytes()))


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_both_variants(tmp_path, reset_after):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((SEQ_LEN, 3)),
                              keras.layers.GRU(4, reset_after=reset_after, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(3, "softmax"))])
    onnx_path = export_onnx(model, tmp_path / "gru.onnx")
    import onnx

    gru = next(n for n in onnx.load(onnx_path).graph.node if n.op_type == "GRU")
    linear_before_reset = next(a.i for a in gru.attribute if a.name == "linear_before_reset")
    assert linear_before_reset == int(reset_after)
    assert verify(model, onnx_path).passed
    assert verify(model, export_tflite(model, tmp_path / "gru.tflite")).passed


def test_lecture_inputs_with_padding_in_the_middle_of_a_batch(tmp_path):
    """Masked steps behave as in Keras: rows of every length, ONNX with any batch/length."""
    model = _model("lstm", "many_to_many", "bidirectional", "embedding_mask")
    x = np.array([[1, 2, 3, 4, 5, 1, 2, 3, 4], [3, 3, 0, 0, 0, 0, 0, 0, 0],
                  [5, 4, 3, 2, 1, 0, 0, 0, 0]], np.int32)
    onnx_model = load(export_onnx(model, tmp_path / "m.onnx"))
    assert_outputs_close("onnx padded batch", onnx_model.run(x), np.asarray(model(x)),
                         ONNX_TOLERANCE)
    assert_outputs_close("onnx short batch", onnx_model.run(x[1:, :4]), np.asarray(model(x[1:, :4])),
                         ONNX_TOLERANCE)
    tflite_model = load(export_tflite(model, tmp_path / "m.tflite", batch_size=3, seq_len=9))
    assert_outputs_close("tflite padded batch", tflite_model.run(x), np.asarray(model(x)),
                         TFLITE_TOLERANCE)


def test_functional_models_export_including_branches_and_merges(tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    hidden = keras.layers.Embedding(9, 4, mask_zero=True)(ids)
    hidden = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(hidden)
    probabilities = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.1)(hidden))
    model = keras.Model(ids, probabilities)
    assert verify(model, export_onnx(model, tmp_path / "f.onnx")).passed
    assert verify(model, export_tflite(model, tmp_path / "f.tflite", seq_len=7)).passed

    inputs = keras.Input((6, 3))
    branch_a = keras.layers.LSTM(4)(inputs)
    branch_b = keras.layers.GRU(4)(inputs)
    merged = keras.Model(inputs, keras.layers.Add()([branch_a, branch_b]))
    onnx_path = export_onnx(merged, tmp_path / "merged.onnx")
    assert verify(merged, onnx_path).passed
    assert verify(merged, export_tflite(merged, tmp_path / "merged.tflite")).passed
    import onnx

    op_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    assert op_types.count("LSTM") == 1 and op_types.count("GRU") == 1, op_types
    assert "Loop" not in op_types and "Scan" not in op_types


def test_export_does_not_change_the_model(tmp_path):
    model = _model("gru", "many_to_one", "stacked", "one_hot")
    x = np.random.default_rng(0).normal(size=(2, SEQ_LEN, 6)).astype(np.float32)
    before = np.asarray(model(x))
    weights = [w.copy() for w in model.get_weights()]
    export_tflite(model, tmp_path / "m.tflite", seq_len=SEQ_LEN, quantize="int8",
                  representative_data=x)
    export_onnx(model, tmp_path / "m.onnx")
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)


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
    model = _model("lstm", "many_to_many", "single", "one_hot", hidden_size=128)
    float32 = export_tflite(model, tmp_path / "f32.tflite", seq_len=SEQ_LEN)
    float16 = export_tflite(model, tmp_path / "f16.tflite", seq_len=SEQ_LEN, quantize="float16")
    dynamic = export_tflite(model, tmp_path / "dyn.tflite", seq_len=SEQ_LEN, quantize="dynamic")
    assert float16.stat().st_size < 0.6 * float32.stat().st_size
    assert dynamic.stat().st_size < 0.4 * float32.stat().st_size


# -- metadata ---------------------------------------------------------------------------------

def test_vocabulary_travels_with_both_formats(tmp_path, hihello_results):
    result = hihello_results["gru"]
    metadata = vocabulary_metadata(result["vocabulary"], task="hihello")
    for path in (export_tflite(result["model"], tmp_path / "h.tflite", metadata=metadata),
                 export_onnx(result["model"], tmp_path / "h.onnx", metadata=metadata)):
        stored = load(path).metadata
        assert stored["task"] == "hihello"
        assert json.loads(stored["vocabulary"])["symbols"] == list(result["vocabulary"].symbols)


# -- failure modes ----------------------------------------------------------------------------

def test_unsupported_layer_names_it_and_writes_nothing(tmp_path):
    import keras
    import tensorflow as tf

    # Python code inside the graph has no TFLite builtin and no ONNX form
    python = keras.layers.Lambda(
        lambda x: tf.numpy_function(lambda v: v * 2, [x], tf.float32, stateful=False),
        output_shape=(5, 3), name="my_python")
    model = keras.Sequential([keras.Input((5, 3)), python, keras.layers.LSTM(3)])
    with pytest.raises(TFLiteConversionError, match="PyFunc.* builtin ops only"):
        export_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(UnsupportedModelError, match="no ONNX form: PyFunc"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("bad_path, message", [
    ("missing_dir/m.onnx", "does not exist"),
    ("m.txt", "should end in '.onnx'"),
])
def test_bad_output_paths(tmp_path, bad_path, message):
    model = build_model(cell="gru", input_size=3, hidden_size=2, seq_len=4)
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / bad_path)


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch, failing):
    """A disk that fails mid-write (fsync) or at the rename: a ValueError, and neither the
    target nor the temporary file stays (root may write anywhere, so the failure is made)."""
    import errno
    import os

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    model = build_model(cell="gru", input_size=3, hidden_size=2, seq_len=4)
    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(ValueError, match="Cannot write .*No space left"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_write_leaves_one_reusable_temporary_file(tmp_path):
    from export._files import write_atomic

    stale = tmp_path / ".m.onnx.partial"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a model")
    write_atomic(tmp_path / "m.onnx", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"whole"


def test_two_exports_into_one_directory_cannot_both_succeed(tmp_path):
    """(Two writers of one file no longer refuse each other: each writes its own exclusive
    temporary file and the last rename wins whole; see tests/test_hostile.py.)"""
    from export._files import directory_lock

    with directory_lock(tmp_path):
        with pytest.raises(ValueError, match="Another export is writing into"):
            with directory_lock(tmp_path):
                pass


def test_written_files_get_the_usual_permissions(tmp_path):
    """The result of an atomic write must be readable like a file written with open(): 0666
    minus the umask."""
    import os

    from export._files import write_atomic

    umask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "m.onnx", b"data")
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_corrupt_and_missing_files_give_clear_errors(tmp_path, suffix):
    with pytest.raises(ModelFileError, match="does not exist"):
        load(tmp_path / f"missing{suffix}")
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ModelFileError, match="not a valid"):
        load(corrupt)


def test_runtime_checks_input_shape_and_dtype(tmp_path, sentiment_results):
    result = sentiment_results["gru"]
    model = load(export_tflite(result["model"], tmp_path / "s.tflite"))
    with pytest.raises(ValueError, match=r"expects input shape \(1, 10\); got \(1, 9\)"):
        model.run(result["x"][:1, :9])
    with pytest.raises(ValueError, match="rank 2"):
        model.run(result["x"][0])
    with pytest.raises(ValueError, match="integer token ids"):
        model.run(result["x"][:1].astype(np.float32))


# -- the exported files run where TensorFlow cannot be imported --------------------------------

TF_FREE_SCRIPT = """
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now raises ImportError
sys.modules["keras"] = None
import numpy as np
from export.runtime import load
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    np.save(path + ".out.npy", load(path).run(x))
print("tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
"""


def test_exported_files_run_without_tensorflow(tmp_path, hihello_results):
    result = hihello_results["lstm"]
    tflite = export_tflite(result["model"], tmp_path / "h.tflite")
    onnx_path = export_onnx(result["model"], tmp_path / "h.onnx")
    np.save(tmp_path / "x.npy", result["x"])
    completed = subprocess.run(
        [sys.executable, "-c", TF_FREE_SCRIPT, str(tmp_path / "x.npy"), str(tflite), str(onnx_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"
    expected = np.asarray(result["model"](result["x"]))
    assert_outputs_close("tflite without TF", np.load(f"{tflite}.out.npy"), expected,
                         TFLITE_TOLERANCE)
    assert_outputs_close("onnx without TF", np.load(f"{onnx_path}.out.npy"), expected,
                         ONNX_TOLERANCE)


# -- the command line --------------------------------------------------------------------------

def _cli(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "export", *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_command_line_exports_verifies_and_fails_cleanly(tmp_path, sentiment_results):
    result = sentiment_results["lstm"]
    model_path = tmp_path / "sentiment.keras"
    result["model"].save(model_path)
    out = tmp_path / "out"
    completed = _cli(model_path, "--to", "tflite", "onnx", "--out", out, "--verify",
                     "--quantize", "none", "float16", cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "sentiment.float16.tflite", "sentiment.onnx", "sentiment.tflite"]
    assert completed.stdout.count("PASS") == 3 and "FAIL" not in completed.stdout

    missing = _cli(tmp_path / "nope.keras", "--out", tmp_path / "o1", cwd=ROOT)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    bad = _cli(corrupt, "--out", tmp_path / "o2", cwd=ROOT)
    assert bad.returncode == 2 and "is not a .keras archive" in bad.stderr
    # one error line and nothing else: no TensorFlow start-up logging
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:")
    assert not any((tmp_path / "o2").glob("*"))
    unwritable = _cli(model_path, "--out", "/proc/keras_rnn_out", cwd=ROOT)
    assert unwritable.returncode == 2 and "output directory" in unwritable.stderr

    import keras

    # a stateful model: exported and verified call after call (batch from the model)
    stateful = keras.Sequential([keras.Input((4, 3), batch_size=2),
                                 keras.layers.GRU(2, stateful=True, name="streaming")])
    stateful.save(tmp_path / "stateful.keras")
    done = _cli(tmp_path / "stateful.keras", "--out", tmp_path / "o3", "--verify", cwd=ROOT)
    assert done.returncode == 0 and done.stdout.count("PASS") == 2, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == [
        "stateful.onnx", "stateful.tflite"]


# -- TFLite time-loop forms ----------------------------------------------------------------------

FORM_CASES = [(cell, "while", shape) for cell in CELLS for shape in SHAPES] + [
    pytest.param("lstm", "fused", shape, marks=pytest.mark.slow) for shape in SHAPES]


@pytest.mark.parametrize("cell, form, shape", FORM_CASES)
def test_every_tflite_form_passes_verify(tmp_path, cell, form, shape):
    model = _model(cell, "many_to_many", shape, "one_hot")
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

    model = _model("lstm", "many_to_many", "single", "one_hot")
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
    gru = _model("gru", "many_to_many", "single", "one_hot")
    with pytest.raises(ValueError, match=r"form='fused' needs LSTM layers only"):
        export_tflite(gru, tmp_path / "g.tflite", seq_len=SEQ_LEN, form="fused")
    masked = _model("lstm", "many_to_many", "single", "embedding_mask")
    with pytest.raises(TFLiteConversionError, match=r"did not fuse"):
        export_tflite(masked, tmp_path / "m.tflite", seq_len=SEQ_LEN, form="fused")
    with pytest.raises(ValueError, match=r"int8.*form='unrolled'"):
        export_tflite(gru, tmp_path / "i.tflite", seq_len=SEQ_LEN, form="while", quantize="int8",
                      representative_data=np.zeros((2, SEQ_LEN, 6), np.float32))
    with pytest.raises(ValueError, match=r"Unknown form 'scan'"):
        export_tflite(gru, tmp_path / "s.tflite", seq_len=SEQ_LEN, form="scan")
    assert list(tmp_path.iterdir()) == []


def test_a_huge_fixed_batch_is_refused_before_converting(tmp_path):
    model = _model("gru", "many_to_one", "single", "one_hot")
    with pytest.raises(ValueError, match="values per activation"):
        export_tflite(model, tmp_path / "m.tflite", batch_size=100_000_000, seq_len=SEQ_LEN)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_auto_form_unrolls_short_sequences_and_loops_long_ones(tmp_path):
    from export.tflite import MAX_AUTO_UNROLLED_CELL_STEPS as CELL_STEPS
    from export.tflite import choose_form
    from keras_rnn.structure import read_model

    model = _model("gru", "many_to_one", "single", "one_hot")
    structure = read_model(model).recurrent_layers
    assert choose_form(structure, SEQ_LEN) == "unrolled"
    assert choose_form(structure, CELL_STEPS) == "unrolled"
    assert choose_form(structure, CELL_STEPS + 1) == "while"
    # the cost is cell steps: a stacked bidirectional model loops at a quarter of the length
    deep = read_model(_model("gru", "many_to_one", "bidirectional", "one_hot",
                             num_layers=2)).recurrent_layers
    assert choose_form(deep, CELL_STEPS // 4) == "unrolled"
    assert choose_form(deep, CELL_STEPS // 4 + 1) == "while"
    long = CELL_STEPS + 200
    path = export_tflite(model, tmp_path / "long.tflite", seq_len=long)
    assert "WHILE" in operator_names(path.read_bytes())
    x = np.random.default_rng(1).normal(size=(1, long, 6)).astype(np.float32)
    assert_outputs_close(f"{long} steps, WHILE", load(path).run(x), np.asarray(model(x)),
                         TFLITE_TOLERANCE)


@pytest.fixture(scope="module")
def saved_sentiment(tmp_path_factory, sentiment_results):
    result = sentiment_results["gru"]
    directory = tmp_path_factory.mktemp("cli")
    result["model"].save(directory / "s.keras")
    return directory / "s.keras", result


def _bad_npy(tmp_path, array):
    path = tmp_path / "calibration.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("make_arguments, message", [
    (lambda d, x: ["--calibration", _bad_npy(d, x[0])], r"shape \(10,\); expected \(n, steps\)"),
    (lambda d, x: ["--calibration", _bad_npy(d, np.float32(1))], r"shape \(\); expected"),
    (lambda d, x: ["--calibration", _bad_npy(d, x[:0])], r"shape \(0, 10\); expected"),
    (lambda d, x: ["--calibration", d / "missing.npy"], "does not exist"),
    (lambda d, x: ["--calibration", d / "s.keras"], "not a readable .npz"),  # a zip
    (lambda d, x: ["--calibration", d / "vocabulary.json"], "not a readable .npy"),
])
def test_command_line_refuses_bad_calibration_in_one_line(tmp_path, saved_sentiment, capsys,
                                                          make_arguments, message):
    from export.__main__ import main

    model_path, result = saved_sentiment
    (tmp_path / "s.keras").write_bytes(model_path.read_bytes())
    (tmp_path / "vocabulary.json").write_text('{"symbols": ["a"]}')
    arguments = make_arguments(tmp_path, result["x"])
    code = main([str(model_path), "--to", "tflite", "--quantize", "int8", "--out",
                 str(tmp_path / "out"), *map(str, arguments)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and error[0].startswith("error:"), error
    assert re.search(message, error[0]), error[0]
    assert not list((tmp_path / "out").glob("*.tflite"))


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be an object"), ("null", "must be an object"),
    ('{"level": "char"}', "needs 'symbols'"), ('{"symbols": [1, 2]}', "needs 'symbols'"),
    ("{not json", "not valid JSON"),
])
def test_command_line_refuses_a_bad_vocabulary_in_one_line(tmp_path, saved_sentiment, capsys,
                                                           text, message):
    from export.__main__ import main

    model_path, _ = saved_sentiment
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(text)
    code = main([str(model_path), "--to", "onnx", "--vocabulary", str(vocabulary), "--out",
                 str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0], error


def test_python_layers_load_only_when_the_user_trusts_them(tmp_path, capsys):
    import keras

    from export.__main__ import main

    model = keras.Sequential([keras.Input((4, 3)), keras.layers.Lambda(lambda x: x * 2.0),
                              keras.layers.GRU(2)])
    model.save(tmp_path / "lambda.keras")
    code = main([str(tmp_path / "lambda.keras"), "--to", "onnx", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2 and "--trust-python-layers" in error and "safe_mode" not in error
    # trusted, it loads, and its TensorFlow ops export like any other layer's
    code = main([str(tmp_path / "lambda.keras"), "--to", "onnx", "--out", str(tmp_path),
                 "--trust-python-layers", "--verify"])
    printed = capsys.readouterr()
    assert code == 0 and "PASS" in printed.out, printed
    assert (tmp_path / "lambda.onnx").exists()


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
