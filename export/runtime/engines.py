"""The ONNX runtimes an .onnx file can be run in: ONNX Runtime (what `export.runtime` runs by
default), the ONNX specification's own executable semantics (`onnx.reference`, the runtime
others are built against) and OpenVINO (Intel CPUs, edge boxes). Each is an engine with one
method, `run(output_names, feeds) -> [arrays]`; `verify` judges a file in several of them.
"""

from __future__ import annotations

import numpy as np

ONNX_RUNTIMES = ("onnxruntime", "reference", "openvino")


def onnx_engine(name: str, path, content: bytes, *, session, num_threads: int = 1):
    """The engine `name` for an .onnx file already opened in ONNX Runtime (`session`)."""
    if name == "onnxruntime":
        return session
    if name == "reference":
        return _Reference(content)
    if name == "openvino":
        return _OpenVINO(path, num_threads)
    raise ValueError(f"Unknown ONNX runtime {name!r}: expected one of {ONNX_RUNTIMES}.")


def _missing(package: str, runtime: str) -> ValueError:
    return ValueError(f"Running a file in {runtime} needs the {package!r} package "
                      "(pip install -r requirements.txt).")


class _Reference:
    """`onnx.reference.ReferenceEvaluator`: pure NumPy, slow, the specification's meaning."""

    def __init__(self, content: bytes):
        try:
            import onnx
            from onnx.reference import ReferenceEvaluator
        except ImportError:
            raise _missing("onnx", "the ONNX reference evaluator") from None
        self._evaluator = ReferenceEvaluator(onnx.load_from_string(content))

    def run(self, output_names, feeds):
        with np.errstate(all="ignore"):  # NaN inputs carry NaN on, as Keras does: no warning
            return self._evaluator.run(output_names, feeds)


class _OpenVINO:
    """OpenVINO on the CPU, in float32 (its default on CPUs with bfloat16 units is bfloat16,
    which would be a different model), with dynamic shapes as the file declares them."""

    def __init__(self, path, num_threads: int):
        try:
            import openvino
        except ImportError:
            raise _missing("openvino", "OpenVINO") from None
        core = openvino.Core()
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": num_threads})
        # (a port has every name its tensor carries in the file, the graph output's among them)
        self._ports = {name: port for port in self._compiled.outputs for name in port.get_names()}

    def run(self, output_names, feeds):
        results = self._compiled(feeds)
        return [np.asarray(results[self._ports[name]]) for name in output_names]
