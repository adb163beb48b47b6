"""ONNX files in every ONNX runtime: which give Keras's answer, and what the portable graph costs.

For each construct at the medium size (50 steps, 64 inputs, hidden 128, Dense head; random
seeded weights and biases), with padding at the start, the end and the middle of rows where
the construct is masked:
- the largest difference from Keras of `export_onnx`'s file and of tf2onnx's file (the route
  without this project, what Keras's `model.export(format="onnx")` runs) in ONNX Runtime, the
  ONNX reference evaluator (the specification's meaning), OpenVINO (CPU, float32) and tract
  (with the input's shape given: its refusal, if any, is printed);
- ONNX Runtime's median latency (one thread) of both files at batch 1 and batch 16.

The runtimes are driven directly (not through `export.runtime`), so the same script measures
the files of any version of the exporter.

Run:  python benchmarks/onnx_runtimes.py [--runs 200]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import median_ms, tf2onnx_export  # noqa: E402

from export import export_onnx  # noqa: E402
from export.table import format_table  # noqa: E402

STEPS, FEATURES, HIDDEN, CLASSES = 50, 64, 128, 10
RUNTIMES = ("onnxruntime", "reference", "openvino", "tract")
CONSTRUCTS = ("forward", "masked forward", "masked go_backwards", "masked Bidirectional",
              "masked return_state")


def build(cell: str, construct: str):
    import keras

    keras.utils.set_random_seed(3)
    layer = getattr(keras.layers, cell)
    options = dict(bias_initializer="uniform")
    inputs = keras.Input((None, FEATURES), name="inputs")
    x = inputs if construct == "forward" else keras.layers.Masking(0.0)(inputs)
    if construct == "masked Bidirectional":
        x = keras.layers.Bidirectional(layer(HIDDEN, **options))(x)
    elif construct == "masked return_state":
        x, *states = layer(HIDDEN, return_state=True, **options)(x)
        x = keras.layers.Concatenate()([x, *states])
    else:
        x = layer(HIDDEN, go_backwards=construct.endswith("go_backwards"), **options)(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(x))


def padded(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, STEPS, FEATURES)).astype(np.float32)
    for row in range(batch):  # start, end, middle, none, in turn
        pattern = row % 4
        if pattern == 0:
            x[row, :rng.integers(1, STEPS // 2)] = 0
        elif pattern == 1:
            x[row, rng.integers(STEPS // 2, STEPS):] = 0
        elif pattern == 2:
            x[row, rng.choice(STEPS, STEPS // 3, replace=False)] = 0
    return x


def run_everywhere(path: Path, x: np.ndarray) -> dict:
    """{runtime: the file's first output on x, or the first line of the runtime's refusal}."""
    import onnx
    import onnxruntime
    import openvino
    import tract
    from onnx.reference import ReferenceEvaluator

    def ort():
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        return session.run(None, {"inputs": x})[0]

    def reference():
        with np.errstate(all="ignore"):
            return ReferenceEvaluator(onnx.load(path)).run(None, {"inputs": x})[0]

    def openvino_cpu():
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(compiled({"inputs": x})[compiled.outputs[0]])

    def tract_cpu():  # the input's shape given: tract refuses some symbolic ones
        model = tract.onnx().load(str(path))
        model.set_input_fact(0, ",".join(map(str, x.shape)) + ",f32")
        return model.into_model().into_runnable().run([x])[0].to_numpy()

    results = {}
    for name, run in zip(RUNTIMES, (ort, reference, openvino_cpu, tract_cpu)):
        try:
            results[name] = run()
        except Exception as error:  # each runtime raises its own kind
            lines = [line for line in str(error).splitlines() if line.strip()]
            results[name] = (lines[-1] if lines else type(error).__name__)[:50]
    return results


def latency_ms(path: Path, x: np.ndarray, runs: int) -> float:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return median_ms(lambda: session.run(None, {name: x}), runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cells", nargs="+", default=["SimpleRNN", "LSTM", "GRU"])
    args = parser.parse_args()
    parity, speed = [], []
    directory = Path(tempfile.mkdtemp())
    for cell in args.cells:
        for construct in CONSTRUCTS:
            model = build(cell, construct)
            x = padded(8)
            expected = np.asarray(model(x))
            stem = f"{cell}_{construct.replace(' ', '_')}"
            files = {"export_onnx": export_onnx(model, directory / f"{stem}.onnx"),
                     "tf2onnx": tf2onnx_export(model, directory / f"{stem}.tf2onnx.onnx")}
            row = [cell, construct]
            for path in files.values():
                results = run_everywhere(path, x)
                row += [f"{np.max(np.abs(results[r] - expected)):.1e}"
                        if isinstance(results[r], np.ndarray) else f"refused: {results[r]}"
                        for r in RUNTIMES]
            parity.append(row)
            timings = [cell, construct]
            for batch in (1, 16):
                batch_x = padded(batch, seed=1)
                ours = latency_ms(files["export_onnx"], batch_x, args.runs)
                theirs = latency_ms(files["tf2onnx"], batch_x, args.runs)
                timings += [f"{ours:.3f} ms", f"{theirs:.3f} ms ({theirs / ours:.2f}x)"]
            speed.append(timings)
            print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    print(format_table(["cell", "construct"] + [f"export_onnx {r}" for r in RUNTIMES]
                       + [f"tf2onnx {r}" for r in RUNTIMES], parity))
    print()
    print(format_table(["cell", "construct", "export_onnx b1", "tf2onnx b1", "export_onnx b16",
                        "tf2onnx b16"], speed))


if __name__ == "__main__":
    main()
