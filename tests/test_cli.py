"""The command line (`python -m export`): exports, verifies, refuses in one line, exit codes."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
        "sentiment.float16.onnx", "sentiment.float16.tflite", "sentiment.onnx",
        "sentiment.tflite"]
    assert completed.stdout.count("PASS") == 4 and "FAIL" not in completed.stdout

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


CUSTOM_CELL_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="cli_test")
class ScaledCell(keras.layers.Layer):
    """A custom recurrent cell (the converter's own loop form)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, inputs, states):
        output = keras.ops.tanh(keras.ops.matmul(inputs, self.kernel) + 0.5 * states[0])
        return output, [output]

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''


@pytest.fixture(scope="module")
def refusal_files(tmp_path_factory):
    """Model files for each way the command line refuses: its own checks, Keras's loading,
    the user's module, the model itself."""
    import importlib.util

    import keras

    directory = tmp_path_factory.mktemp("refusals")
    (directory / "cells.py").write_text(CUSTOM_CELL_MODULE)
    (directory / "broken.py").write_text("raise RuntimeError('the module itself fails')\n")
    spec = importlib.util.spec_from_file_location("cli_test_cells", directory / "cells.py")
    cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cells)
    inputs = keras.Input((5, 3))
    keras.Model(inputs, keras.layers.RNN(cells.ScaledCell(4))(inputs)).save(
        directory / "custom.keras")
    keras.saving.get_custom_objects().pop("cli_test>ScaledCell")  # as in a fresh process
    gelu = keras.Model(inputs, keras.layers.GRU(4, activation="gelu", name="gelu_gru")(inputs))
    gelu.save(directory / "gelu.keras")
    keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(2)]).save(directory / "plain.keras")
    keras.Sequential([keras.Input((4, 3)), keras.layers.Bidirectional(
        keras.layers.GRU(2), name="bidirectional")]).save(directory / "bidirectional.keras")
    words = keras.Input((5,), dtype="string")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"], name="lookup")(words)
    keras.Model(words, keras.layers.GRU(2)(keras.layers.Embedding(5, 3)(ids))).save(
        directory / "strings.keras")
    (directory / "notes.txt").write_text("not a model")
    (directory / "truncated.keras").write_bytes(b"PK\x03\x04 truncated zip")
    return directory


@pytest.mark.parametrize("arguments, message", [
    (["missing.keras"], "does not exist"),
    (["notes.txt"], "is not a .keras file"),
    (["truncated.keras"], "is not a .keras archive"),
    (["custom.keras", "--to", "onnx"], "uses 'ScaledCell', which is not registered here: "
                                       "pass --custom-objects"),
    (["custom.keras", "--custom-objects", "broken.py"],
     "'broken.py' could not be imported \\(RuntimeError: the module itself fails\\)"),
    (["custom.keras", "--custom-objects", "no_such_module_here"],
     "could not be imported \\(ModuleNotFoundError"),
    (["gelu.keras", "--to", "onnx"], "Erfc .*gelu_gru"),
    (["strings.keras"], "are strings, read by \\['lookup'\\].*ship the vocabulary"),
    (["plain.keras", "--batch-size", "0"], "--batch-size must be from 1"),
    (["plain.keras", "--quantize", "int8"], "needs --calibration"),
    (["plain.keras", "--verify", "--min-agreement", "1.5"], "--min-agreement is a share"),
    (["bidirectional.keras", "--step"], "cannot be streamed step by step: 'bidirectional' "
                                        "\\(Bidirectional\\) reads the sequence backwards"),
])
def test_every_refusal_is_one_line_and_exit_2_with_no_file(refusal_files, capsys, monkeypatch,
                                                          arguments, message):
    from export.__main__ import main

    monkeypatch.chdir(refusal_files)
    out = refusal_files / "out"
    code = main([*arguments, "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, error)
    assert len(error) == 1 and error[0].startswith("error:"), error
    assert re.search(message, error[0]), error[0]
    assert not any(out.rglob("*.tflite")) and not any(out.rglob("*.onnx"))


def test_custom_objects_load_the_users_cells(refusal_files, capsys, monkeypatch):
    """With the module that registers it, the custom cell loads and exports (the converter's
    own loop form) and verifies."""
    from export.__main__ import main

    monkeypatch.chdir(refusal_files)
    out = refusal_files / "custom_out"
    code = main(["custom.keras", "--custom-objects", "cells.py", "--verify", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.count("PASS") == 2 and "converter loop" in printed.out, printed.out
    assert sorted(p.name for p in out.iterdir()) == ["custom.onnx", "custom.tflite"]
