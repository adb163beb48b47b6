"""Files, paths and signals from someone who means harm: no write through a planted link, no
read of another file, no process death, no fooled verify, no good file lost."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from export import export_onnx, export_tflite, verify
from export._files import STAGING_PREFIX, write_atomic
from export.runtime import ModelFileError, StepModel, Translator, load
from export.tflite.flatbuffer import builtin_codes, packed
from keras_rnn import build_model

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("tflite", "onnx")


@pytest.fixture(scope="module")
def gru():
    """An untrained id-input GRU with nonzero biases (its output depends on every weight)."""
    import keras

    keras.utils.set_random_seed(5)
    model = build_model(cell="gru", input_size=7, hidden_size=4, output_size=3, seq_len=6,
                        inputs="embedding", embedding_dim=3)
    for layer in model.layers:
        for weight in layer.weights:
            if "bias" in weight.path:
                weight.assign(np.random.default_rng(1).normal(size=weight.shape) * 0.5)
    return model


@pytest.fixture(scope="module")
def gru_files(gru, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gru")
    return {"tflite": export_tflite(gru, folder / "gru.tflite"),
            "onnx": export_onnx(gru, folder / "gru.onnx")}


# -- 1. writes never follow links -------------------------------------------------------------

def test_a_planted_link_or_fifo_is_replaced_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.onnx").symlink_to(victim)  # at the target name
    os.link(victim, out / "h.onnx")  # a hard link at another target name
    (out / ".m.onnx.partial").symlink_to(victim)  # the fixed temporary name older runs used
    os.mkfifo(out / ".h.onnx.partial")  # would block an open() forever
    (out / ".m.onnx.abc123.partial").symlink_to(victim)  # a leftover-looking link
    write_atomic(out / "m.onnx", b"model m")
    write_atomic(out / "h.onnx", b"model h")
    assert victim.read_bytes() == b"precious"
    for name, data in (("m.onnx", b"model m"), ("h.onnx", b"model h")):
        assert not (out / name).is_symlink() and (out / name).read_bytes() == data
    assert (out / "h.onnx").stat().st_ino != victim.stat().st_ino
    # the planted temporary names were removed without being followed; nothing else is left
    assert sorted(p.name for p in out.iterdir()) == ["h.onnx", "m.onnx"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    import fcntl

    busy = tmp_path / ".m.onnx.live.partial"
    descriptor = os.open(busy, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # another process mid-write
    try:
        write_atomic(tmp_path / "m.onnx", b"mine")
        assert busy.exists() and (tmp_path / "m.onnx").read_bytes() == b"mine"
    finally:
        os.close(descriptor)


# -- 2. loading never reads other files -------------------------------------------------------

def _external_data_model(folder: Path, location: str) -> Path:
    """y = x + w, with w's 4 float32 values kept in the file `location` (ONNX external data)."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["inputs", "w"], ["outputs"])], "g",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = folder / "external.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_external_data_is_refused_unless_allowed_and_inside_the_folder(tmp_path, monkeypatch):
    secret = np.array([1.5, 2.5, 3.5, 4.5], np.float32)
    working = tmp_path / "cwd"
    (working / "etc").mkdir(parents=True)
    (working / "etc" / "hostname").write_bytes(secret.tobytes())  # what a crafted file reads
    models = tmp_path / "models"
    models.mkdir()
    path = _external_data_model(models, "etc/hostname")
    monkeypatch.chdir(working)
    with pytest.raises(ModelFileError, match="tensor 'w' keeps its data in another file "
                       r"\('etc/hostname'\)"):
        load(path)
    # allowed, it is read from the model's folder only: absent there, refused
    with pytest.raises(ModelFileError, match="not a file inside the model's folder"):
        load(path, allow_external_data=True)
    (models / "etc").mkdir()
    (models / "etc" / "hostname").symlink_to(working / "etc" / "hostname")  # a link out
    with pytest.raises(ModelFileError, match="not a file inside the model's folder"):
        load(path, allow_external_data=True)
    (models / "etc" / "hostname").unlink()
    (models / "etc" / "hostname").write_bytes(secret.tobytes())
    result = load(path, allow_external_data=True).run(np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(result, secret[None])  # exact: 0 + w


# -- 3. no crafted file kills the process ---------------------------------------------------

def _crashing_tflite(content: bytes) -> bytes:
    """The exported file with its first LOGISTIC operator reading tensor -1 (SIGSEGV in LiteRT)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    codes = builtin_codes(model)
    graph = model.subgraphs[0]
    operator = next(op for op in graph.operators
                    if codes[op.opcodeIndex] == schema.BuiltinOperator.LOGISTIC)
    operator.inputs = [-1] + list(operator.inputs[1:])
    return packed(model)


def test_a_tflite_file_that_crashes_the_interpreter_is_refused(tmp_path, gru_files):
    crashing = tmp_path / "crash.tflite"
    crashing.write_bytes(_crashing_tflite(gru_files["tflite"].read_bytes()))
    # the mutant really kills an unguarded interpreter process (so this test can fail)
    unguarded = subprocess.run(
        [sys.executable, "-c", "import sys; from ai_edge_litert.interpreter import Interpreter; "
         "i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors(); i.invoke()",
         str(crashing)], capture_output=True, timeout=60)
    assert unguarded.returncode < 0, unguarded.returncode
    with pytest.raises(ModelFileError, match=r"crashed the LiteRT interpreter \(SIG"):
        load(crashing)


@pytest.mark.slow
def test_fuzzed_files_never_kill_the_process(gru_files):
    """Structure-aware mutants of both formats (benchmarks/fuzz_files.py, as many as a few
    seconds allow); a process death would end the script with a signal."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz_files.py"), str(gru_files["tflite"]),
         str(gru_files["onnx"]), "--count", "16", "--seed", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert completed.returncode == 0, (completed.returncode, completed.stdout, completed.stderr)
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]]
            for line in completed.stdout.splitlines()[1:3]}
    assert rows["gru.tflite"][0] == rows["gru.onnx"][0] == 16, completed.stdout
    assert rows["gru.tflite"][1] > 0 and rows["gru.onnx"][1] > 0, completed.stdout  # refusals


# -- 4. .keras archives are checked before Keras opens them -----------------------------------

def _cli_in_process(*arguments, capsys):
    from export.__main__ import main

    code = main([str(a) for a in arguments])
    return code, capsys.readouterr()


def test_a_keras_archive_that_inflates_is_refused_at_once(tmp_path, capsys):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", b" " * (80 << 20))  # 80 MiB of spaces: ~80 KB stored
    assert bomb.stat().st_size < 1 << 20
    started = time.perf_counter()
    code, captured = _cli_in_process(bomb, "--out", tmp_path / "out", capsys=capsys)
    assert code == 2 and "refused: its config.json inflates to" in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert time.perf_counter() - started < 30  # generous: the refusal reads no member
    weights = tmp_path / "weights.keras"
    with zipfile.ZipFile(weights, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(8 << 20))  # 8 MiB of zeros, ~8 KB stored
    code, captured = _cli_in_process(weights, "--out", tmp_path / "out", capsys=capsys)
    assert code == 2 and "'model.weights.h5' inflates" in captured.err, captured.err


# -- 5. verify judges each output on its own scale --------------------------------------------

def _small_output_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(cell="lstm", input_size=3, hidden_size=4, output_size=2, seq_len=5,
                        output_activation="linear")
    head = model.layers[-1]
    # outputs of a few 1e-6: any difference between two such models is below both absolute
    # bounds (1e-5 ONNX, 1e-4 TFLite) and above the own-scale floor (1e-6)
    head.kernel.assign(head.kernel * 1e-5)
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_fails_another_models_file_with_small_outputs(tmp_path, fmt):
    model_a, model_b = _small_output_model(1), _small_output_model(2)
    exporter = export_tflite if fmt == "tflite" else export_onnx
    path = exporter(model_b, tmp_path / f"b.{fmt}")
    own = verify(model_b, path)
    assert own.passed, str(own)  # the file is right for its own model
    other = verify(model_a, path)
    assert not other.passed, str(other)
    # absolute bounds alone would have passed it: its difference is tiny in absolute terms
    assert other.max_abs_diff < other.tolerance and max(other.scaled_diffs.values()) > 1, str(other)


# -- 6. and 8. a failed run never costs a good file; the name decides nothing -----------------

def test_a_failed_re_export_keeps_the_files_an_earlier_run_shipped(tmp_path, gru, monkeypatch):
    import keras

    from export import onnx as onnx_exporter
    from export.pipeline import VerificationFailed, export_and_verify

    out = tmp_path / "out"
    first = export_and_verify(gru, out, "gru")
    assert all(report.passed for _, report in first)
    shipped = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(shipped) == ["gru.onnx", "gru.tflite"]

    keras.utils.set_random_seed(99)
    other = build_model(cell="gru", input_size=7, hidden_size=4, output_size=3, seq_len=6,
                        inputs="embedding", embedding_dim=3)
    real_export = onnx_exporter.export_onnx
    # a run whose ONNX file comes out wrong (another model's weights): it must fail verify
    monkeypatch.setattr(onnx_exporter, "export_onnx",
                        lambda model, path, **options: real_export(other, path, **options))
    with pytest.raises(VerificationFailed, match="gru failed verification"):
        export_and_verify(gru, out, "gru")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == shipped


def test_the_model_files_name_does_not_choose_what_is_written(tmp_path, gru, capsys):
    model_path = tmp_path / "h.step.keras"
    gru.save(model_path)
    code, captured = _cli_in_process(model_path, "--to", "onnx", "--out", tmp_path / "o1",
                                     "--verify", capsys=capsys)
    assert code == 0, captured.err
    written = load(tmp_path / "o1" / "h.step.onnx")
    assert sorted(written.inputs) == ["inputs"] and not written.stateful  # a sequence model
    # step models only by the explicit option, verified by streaming
    code, captured = _cli_in_process(model_path, "--step", "--out", tmp_path / "o2", "--verify",
                                     capsys=capsys)
    assert code == 0 and captured.out.count("PASS") == 2, captured.out + captured.err
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == [
        "h.step.step.onnx", "h.step.step.tflite"]
    assert StepModel(tmp_path / "o2" / "h.step.step.onnx").state_names == ["state_0"]


# -- 7. SIGTERM and SIGHUP clean up as SIGINT does --------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_mid_run_leaves_no_file(tmp_path, gru, stop):
    model_path = tmp_path / "gru.keras"
    gru.save(model_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "gru.onnx").write_bytes(b"shipped earlier")
    process = subprocess.Popen(
        [sys.executable, "-m", "export", str(model_path), "--out", str(out), "--verify"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 128 + stop, (process.returncode, stderr)
    assert f"stopped by {signal.Signals(stop).name}" in stderr
    assert [p.name for p in out.iterdir()] == ["gru.onnx"]  # the earlier file, and only it
    assert (out / "gru.onnx").read_bytes() == b"shipped earlier"


# -- 9. integer inputs are checked in their own dtype ------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_ids_beyond_the_input_dtype_or_the_table_are_refused(gru_files, fmt):
    model = load(gru_files[fmt], trusted=True)
    shape = (1, 6)  # the .tflite file's fixed shape; the .onnx file takes any
    ids = np.ones(shape, np.uint32)
    ids[0, -1] = 2**32 - 1  # wraps to -1 in int32: the last embedding row
    with pytest.raises(ValueError, match="token id 4294967295 .* beyond what its int32 input"):
        model.run(ids)
    with pytest.raises(ValueError, match="token id 2147483648"):
        model.run(np.where(ids > 1, 2**31, ids).astype(np.int64))
    beyond = np.ones(shape, np.int64)
    beyond[0, 2] = 7  # the table has rows 0..6
    with pytest.raises(ValueError, match="could not run on this input"):
        model.run(beyond)


# -- 10. everything read from a file raises ModelFileError / ValueError -----------------------

def _identity_onnx(path: Path, inputs: dict, metadata: dict) -> Path:
    """An .onnx file whose inputs (name -> shape) each pass to an output `next_<name>` or
    `outputs`, with the given metadata: declared names and fields as a crafted file has them."""
    from onnx import TensorProto, helper

    nodes, graph_inputs, graph_outputs = [], [], []
    for index, (name, shape) in enumerate(inputs.items()):
        output = "outputs" if index == 0 else f"next_{name}"
        nodes.append(helper.make_node("Identity", [name], [output]))
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        graph_outputs.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, shape))
    model = helper.make_model(helper.make_graph(nodes, "g", graph_inputs, graph_outputs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    helper.set_model_props(model, metadata)
    path.write_bytes(model.SerializeToString())
    return path


DEEP = "[" * 200_000 + "]" * 200_000
CRAFTED = {
    "deep stateful_states": ({"inputs": [1, 3]}, {"stateful_states": DEEP}),
    "deep vocabulary": ({"inputs": [1, 3], "state_0": [1, 2]}, {"vocabulary": DEEP}),
    "rank-1 state": ({"inputs": [1, 3], "state_0": [1, 2], "state_1": [2]}, {}),
    "state_abc": ({"inputs": [1, 3], "state_abc": [1, 2]}, {}),
    "state gap": ({"inputs": [1, 3], "state_0": [1, 2], "state_2": [1, 2]}, {}),
    "stateful without inputs": ({"inputs": [1, 3]}, {"stateful_states": '[["a", 2]]'}),
    "max_length": ({"inputs": [1, 3], "state_0": [1, 2]},
                   {"vocabulary": '{"symbols": ["a", "b", "c"]}', "source_vocabulary":
                    '{"symbols": ["a"]}', "max_length": "9" * 5000}),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_onnx_names_and_metadata_raise_model_file_errors(tmp_path, case):
    from export.runtime import generate

    inputs, metadata = CRAFTED[case]
    path = _identity_onnx(tmp_path / "crafted.onnx", inputs, metadata)
    attempts = [lambda: load(path), lambda: StepModel(path), lambda: generate(path, "a", 2),
                lambda: Translator(path, path)]
    refused = 0
    for attempt in attempts:
        try:
            attempt()
        except ValueError:  # ModelFileError included; anything else fails the test
            refused += 1
    assert refused >= 1, case  # some reader of the crafted field refuses it, with a ValueError


TFLITE_METADATA_CASES = {
    "deep JSON": DEEP.encode(),
    "not UTF-8": b"\xff\xfe{}",
    "not an object": b"[1, 2]",
    "a number as value": json.dumps({"vocabulary": 3}).encode(),
    "bad buffer index": None,
}


@pytest.mark.parametrize("case", TFLITE_METADATA_CASES)
def test_crafted_tflite_metadata_raises_model_file_errors(tmp_path, gru_files, case):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(gru_files["tflite"].read_bytes()), 0)
    entry = next(e for e in model.metadata if e.name == b"keras_rnn" or e.name == "keras_rnn")
    if TFLITE_METADATA_CASES[case] is None:
        entry.buffer = len(model.buffers) + 40
    else:
        model.buffers[entry.buffer].data = np.frombuffer(TFLITE_METADATA_CASES[case], np.uint8)
    path = tmp_path / "crafted.tflite"
    path.write_bytes(packed(model))
    with pytest.raises(ModelFileError, match="crafted.tflite"):
        load(path)


def test_bad_keras_json_is_not_a_crash(tmp_path, capsys):
    """A .keras archive whose config is not Keras's: one line, exit 2."""
    archive = tmp_path / "odd.keras"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("config.json", DEEP)
        zipped.writestr("metadata.json", "{}")
    archive.write_bytes(buffer.getvalue())
    code, captured = _cli_in_process(archive, "--out", tmp_path / "out", capsys=capsys)
    assert code == 2 and len(captured.err.strip().splitlines()) == 1, captured.err


@pytest.mark.parametrize("state_name", ["state_abc", "state_7", "state_00"])
def test_crafted_tflite_input_names_raise_model_file_errors(tmp_path, gru, state_name):
    from ai_edge_litert import schema_py_generated as schema

    from export.streaming import export_step

    step = export_step(gru, tmp_path / "gru.step.tflite")
    assert StepModel(step).state_names == ["state_0"]  # the file as written reads fine
    model = schema.ModelT.InitFromPackedBuf(bytearray(step.read_bytes()), 0)
    renamed = 0
    for entry in model.signatureDefs[0].inputs:
        if entry.name in (b"state_0", "state_0"):
            entry.name, renamed = state_name, renamed + 1
    assert renamed == 1
    crafted = tmp_path / "crafted.step.tflite"
    crafted.write_bytes(packed(model))
    with pytest.raises(ModelFileError, match="state inputs must be state_0, state_1"):
        StepModel(crafted)
