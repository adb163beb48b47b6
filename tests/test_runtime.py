"""The TF-free runtime (`export.runtime`): clear errors for missing and corrupt files and wrong
inputs, files that run where TensorFlow cannot be imported, and files someone else wrote:
metadata is validated field by field, and every problem is a `ModelFileError` (a `ValueError`)
naming the file and the field, never an AttributeError, KeyError, TypeError or
UnicodeDecodeError, and never a loop bounded only by the file."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_outputs_close

from export import export_onnx, export_tflite, vocabulary_metadata
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import STATEFUL_METADATA, ModelFileError, StepModel, generate, load
from export.streaming import export_step
from keras_rnn import Vocabulary, build_model

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = Vocabulary.from_texts("hihello")  # 5 symbols


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return build_model(cell="gru", input_size=5, hidden_size=4, output_size=5, seq_len=6)


def _onnx_with(tmp_path, model, metadata: dict):
    """An ONNX file whose metadata_props hold exactly `metadata` (raw strings)."""
    import onnx

    path = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)
    return path


def _tflite_with_raw_metadata(tmp_path, model, data: bytes):
    """A .tflite file whose keras_rnn metadata entry holds `data` as it is."""
    from ai_edge_litert import schema_py_generated as schema

    from export.tflite.flatbuffer import packed

    flatbuffer = export_tflite(model, tmp_path / "m.tflite").read_bytes()
    tree = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    for entry in tree.metadata or []:
        if entry.name in (b"keras_rnn", "keras_rnn"):
            tree.buffers[entry.buffer].data = np.frombuffer(data, np.uint8)
    path = tmp_path / "raw.tflite"
    path.write_bytes(packed(tree))
    return path


@pytest.mark.parametrize("data, field", [
    (b"[1, 2, 3]", "JSON object"),  # valid JSON, not an object
    (b'{"vocabulary": 5}', "'vocabulary' must be a string"),
    (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
    (b"{broken", "not UTF-8 JSON"),
])
def test_malformed_tflite_metadata_is_a_model_file_error(tmp_path, model, data, field):
    path = _tflite_with_raw_metadata(tmp_path, model, data)
    with pytest.raises(ModelFileError, match=field) as raised:
        load(path)
    assert "raw.tflite" in str(raised.value)


@pytest.mark.parametrize("vocabulary, message", [
    ("[1, 2]", "must be an object"),
    ('{"symbols": [1, 2]}', "needs 'symbols'"),
    ("null", "must be an object"),
    ("{not json", "not valid JSON"),
])
def test_a_bad_vocabulary_in_a_step_file_names_the_field(tmp_path, model, vocabulary, message):
    path = export_step(model, tmp_path / "m.step.onnx")
    import onnx

    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "vocabulary", vocabulary
    onnx.save(proto, path)
    with pytest.raises(ModelFileError, match=f"'vocabulary': .*{message}"):
        generate(StepModel(path), "h", 3)


def test_a_vocabulary_of_the_wrong_size_is_refused(tmp_path, model):
    path = export_step(model, tmp_path / "m.step.tflite",
                       metadata=vocabulary_metadata(Vocabulary.from_texts("hi")))  # 2 symbols
    with pytest.raises(ModelFileError, match="5 units but the 'vocabulary' .* has 2 symbols"):
        generate(path, "h", 3)


@pytest.mark.parametrize("layout, message", [
    ("[]", "list of \\[label, units\\] pairs"),
    ('[["gru/h", -4]]', "list of \\[label, units\\] pairs"),
    ('[["gru/h", true]]', "list of \\[label, units\\] pairs"),
    ('{"gru/h": 4}', "list of \\[label, units\\] pairs"),
    ('[["gru/h", 4]]', "has no inputs \\['state_0'\\]"),  # well formed, but no such input
])
def test_a_bad_stateful_layout_is_refused_at_load(tmp_path, model, layout, message):
    path = _onnx_with(tmp_path, model, {STATEFUL_METADATA: layout})
    with pytest.raises(ModelFileError, match=message):
        load(path)


def test_onnx_metadata_values_are_read_as_strings_only(tmp_path, model):
    path = _onnx_with(tmp_path, model, {"vocabulary": VOCABULARY.to_json(), "task": "hihello"})
    assert load(path).metadata["task"] == "hihello"


def test_translator_max_length_from_the_file_is_bounded(tmp_path):
    from export.runtime import metadata_int

    with pytest.raises(ModelFileError, match="'max_length' is 100000000; expected 1 to 1000"):
        metadata_int({"max_length": "100000000"}, "max_length", 20, "d.onnx", low=1, high=1000)
    with pytest.raises(ModelFileError, match="'max_length' must be an integer; got 'ten'"):
        metadata_int({"max_length": "ten"}, "max_length", 20, "d.onnx", low=1, high=1000)
    assert metadata_int({}, "max_length", 20, "d.onnx", low=1, high=1000) == 20


def test_runtime_refuses_empty_axes_negative_ids_and_strings(tmp_path, model):
    for path in (export_onnx(model, tmp_path / "m.onnx"), export_tflite(model, tmp_path / "m.tflite")):
        exported = load(path)
        for bad, message in ((np.zeros((1, 0, 5), np.float32), "empty axis"),
                             (np.zeros((0, 6, 5), np.float32), "empty axis"),
                             (np.full((1, 6, 5), "a"), "expects numbers")):
            with pytest.raises(ValueError, match=message):
                exported.run(bad)
    ids = build_model(cell="lstm", inputs="ids", input_size=5, hidden_size=3, seq_len=4)
    exported = load(export_onnx(ids, tmp_path / "ids.onnx"))
    with pytest.raises(ValueError, match="negative token id"):
        exported.run(np.array([[1, -1, 2, 3]], np.int32))
    with pytest.raises(ValueError, match="could not run on this input"):  # id 9 of 5: named
        exported.run(np.array([[1, 9, 2, 3]], np.int32))


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


def test_unrolled_batch_one_files_run_on_the_kernels_timed_faster(tmp_path):
    """LiteRT's XNNPACK delegate copies the weights for every operator, once per step in an
    unrolled file: at batch 1 it was 2.2-2.5x slower than the builtin kernels on one CPU and
    1.4-1.9x faster on another, so the loader times both on such a file and keeps the faster;
    XNNPACK elsewhere; every choice gives Keras's answer."""
    import keras

    keras.utils.set_random_seed(6)
    model = build_model(cell="gru", input_size=4, hidden_size=6, output_size=3, seq_len=5)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    expected = np.asarray(model(x))
    one = export_tflite(model, tmp_path / "one.tflite")
    two = export_tflite(model, tmp_path / "two.tflite", batch_size=2)
    looped = export_tflite(model, tmp_path / "while.tflite", form="while")
    step = export_step(build_model(cell="gru", input_size=4, hidden_size=6, output_size=3),
                       tmp_path / "m.step.tflite")
    timed = load(one)
    times = timed.kernel_times
    assert set(times) == {"builtin", "xnnpack"} and min(times.values()) > 0, times
    assert timed.xnnpack == (times["xnnpack"] < times["builtin"]), times
    assert load(one, xnnpack=False).kernel_times is None  # a choice made is not timed
    assert load(two).xnnpack and load(looped).xnnpack and StepModel(step).model.xnnpack
    assert load(two).kernel_times is None
    for xnnpack in (None, True, False):
        got = np.concatenate([load(one, xnnpack=xnnpack).run(row[None]) for row in x])
        assert_outputs_close(f"batch 1, xnnpack={xnnpack}", got, expected, TFLITE_TOLERANCE)
        assert_outputs_close(f"batch 2, xnnpack={xnnpack}", load(two, xnnpack=xnnpack).run(x),
                             expected, TFLITE_TOLERANCE)
