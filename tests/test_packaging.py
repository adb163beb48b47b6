"""The package as a device installs it: the TF-free runtime extra alone, and an import of
`export.runtime` that loads neither the exporters nor the training code."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_outputs_close

from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".ci" / "wheels"  # filled by .ci/run (pip download), so the test runs offline


def test_importing_the_runtime_loads_no_exporter_training_code_or_tensorflow():
    script = ("import sys, export.runtime; print(sorted(m for m in sys.modules if m in "
              "('tensorflow', 'keras', 'tf2onnx', 'onnx', 'export.onnx', 'export.tflite', "
              "'export.parity', 'keras_rnn.models', 'keras_rnn.training', 'keras_rnn.datasets')))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=ROOT, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout


def _fresh_venv_with(directory, extra: str):
    """A new venv at `directory` with this project and its `extra` installed offline from
    .ci/wheels and nothing else; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    python = directory / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
         str(WHEELS), f"{ROOT}[{extra}]"], capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    return python


@pytest.mark.skipif(not WHEELS.is_dir(), reason="no .ci/wheels: .ci/run downloads the runtime "
                    "extra's wheels there before the tests")
@pytest.mark.slow
def test_runtime_extra_installs_alone_and_runs_exported_files(tmp_path):
    import keras

    from export import export_onnx, export_tflite

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(1, 5, 3)).astype(np.float32)
    files = [export_tflite(model, tmp_path / "m.tflite"), export_onnx(model, tmp_path / "m.onnx")]
    np.save(tmp_path / "x.npy", x)

    python = _fresh_venv_with(tmp_path / "device", "runtime")
    script = (
        "import sys, numpy as np\n"
        "from export.runtime import load\n"
        "x = np.load(sys.argv[1])\n"
        "for path in sys.argv[2:]:\n"
        "    np.save(path + '.out.npy', load(path).run(x))\n"
        "import importlib.util\n"
        "print(importlib.util.find_spec('tensorflow') is None)\n")
    completed = subprocess.run([str(python), "-c", script, str(tmp_path / "x.npy")]
                               + [str(path) for path in files],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "True"  # TensorFlow is not in the device's install
    expected = np.asarray(model(x))
    for path in files:  # the looser (TFLite) bound: see export.parity for its reason
        assert_outputs_close(path.name, np.load(f"{path}.out.npy"), expected, TFLITE_TOLERANCE)


@pytest.mark.skipif(not WHEELS.is_dir(), reason="no .ci/wheels: .ci/run downloads the export "
                    "extra's wheels there before the tests")
@pytest.mark.slow
def test_export_extra_installs_alone_and_writes_a_verified_onnx_file(tmp_path):
    """`pip install keras-rnn[export]` and nothing else: export_onnx (tf2onnx included) writes
    a file that verify passes, and ONNX Runtime gives the Keras model's answer."""
    python = _fresh_venv_with(tmp_path / "venv", "export")
    script = (
        "import numpy as np, keras\n"
        "from export import export_onnx, verify\n"
        "from export.runtime import load\n"
        "keras.utils.set_random_seed(2)\n"
        "model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4), "
        "keras.layers.Dense(2)])\n"
        "path = export_onnx(model, 'm.onnx')\n"
        "x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)\n"
        "print(verify(model, path).passed)\n"
        "print(float(np.max(np.abs(load(path).run(x) - np.asarray(model(x))))))\n")
    completed = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                               cwd=tmp_path, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    passed, difference = completed.stdout.split()[-2:]
    assert passed == "True" and float(difference) <= ONNX_TOLERANCE, completed.stdout


def test_the_lecture_package_never_imports_the_exporter():
    """`keras_rnn` is what a learner imports; `export` builds on it, never the other way."""
    import ast

    for path in sorted((ROOT / "keras_rnn").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name == "export" or name.startswith("export.") for name in names), (
                path.name, names)
