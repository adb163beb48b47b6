"""Latency and file size of the exported forms, per cell, against the native-op floor.

For each cell at the lecture size (batch 1, 6 steps, 5 inputs, hidden 5) and a medium size
(batch 1, 50 steps, 64 inputs, hidden 128), all with a Dense head, single-threaded:
- Keras compiled call (`tf.function`), the baseline a Keras user has;
- TFLite WHILE loop (`export_tflite(form="while")`: the converter on the model as Keras
  computes it, with builtins only and a fixed batch: Keras's own LiteRT route);
- TFLite unrolled (`form="unrolled"`, what "auto" picks up to 1000 steps);
- TFLite fused UNIDIRECTIONAL_SEQUENCE_LSTM (`form="fused"`, LSTM only);
- ONNX Runtime on `export_onnx`'s graph, and on tf2onnx's graph of the same model (the
  route without this project: GRU and SimpleRNN become a `Loop`);
- ONNX Runtime on a graph holding only the native RNN/LSTM/GRU operator: the floor.
Each figure is the median of many runs; ratios are to the floor of the same run, so read the
ratios rather than the absolute times on a shared machine. Then:
- the streaming step model (`export.streaming`) per token, in both runtimes;
- file sizes of the medium model (float32, float16, dynamic, int8 TFLite and ONNX);
- start-up of a device process that loads an exported file and runs it once: time and peak
  RSS with only NumPy + the runtime (`export.runtime`), against the same with TensorFlow
  imported first (median of 5 fresh processes each).

Run:  python benchmarks/latency.py [--runs 300]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from export import export_onnx, export_tflite
from export.runtime import StepModel, load
from export.streaming import export_step
from export.table import format_table
from keras_rnn import CELLS, build_model

SIZES = {"lecture": dict(steps=6, inputs=5, hidden=5), "medium": dict(steps=50, inputs=64, hidden=128)}


def median_ms(function, runs: int) -> float:
    for _ in range(min(20, runs)):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def native_op_only(onnx_path: Path, target: Path) -> Path:
    """A graph with just the first recurrent operator of `onnx_path`, fed time-major input."""
    import onnx

    model = onnx.load(onnx_path)
    node = next(n for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU"))
    weights = [i for i in model.graph.initializer if i.name in node.input]
    input_size = next(i for i in weights if i.name == node.input[1]).dims[2]
    x = onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT,
                                           ["time", "batch", input_size])
    y = onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph([node], "floor", [x], [y], initializer=weights)
    floor = onnx.helper.make_model(graph, opset_imports=model.opset_import,
                                   ir_version=model.ir_version)
    onnx.save(floor, target)
    return target


def tf2onnx_export(model, target: Path) -> Path:
    """The route an ONNX user takes without this project: tf2onnx on the traced model (what
    Keras's own `model.export(format="onnx")` runs), batch dynamic."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32,
                               name="inputs")]
    function = tf.function(lambda inputs: {"outputs": model(inputs, training=False)},
                           input_signature=signature)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17)
    proto.ir_version = 8  # onnxruntime 1.31 refuses onnx 1.23's default IR version
    target.write_bytes(proto.SerializeToString())
    return target


def step_us(step_model, runs: int) -> float:
    """Median microseconds of one streaming step (state carried from call to call)."""
    x = np.zeros([d or 1 for d in step_model.input_shape], step_model.input_dtype)
    state = [step_model.initial_state()]

    def one():
        _, state[0] = step_model.step(x, state[0], check=False)

    return median_ms(one, runs) * 1000


STARTUP_SCRIPT = """
import sys, time
start = time.perf_counter()
if sys.argv[2] == "with TensorFlow":
    import tensorflow
from export.runtime import load
import numpy as np
model = load(sys.argv[1], trusted=True)  # a device loading its own file skips the crash check
model.run(np.zeros([d or 1 for d in model.input_shape], model.input_dtype))
seconds = time.perf_counter() - start
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's before exec)
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
print(seconds, peak_kib / 1024)
"""


def startup(path: Path, mode: str, repeats: int = 5):
    """Median seconds and peak RSS (MiB) of a fresh process loading and running `path`."""
    results = []
    for _ in range(repeats):
        completed = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, str(path), mode],
                                   capture_output=True, text=True, check=True,
                                   cwd=Path(__file__).resolve().parents[1])
        results.append([float(v) for v in completed.stdout.split()[-2:]])
    seconds, rss = np.median(np.asarray(results), axis=0)
    return seconds, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    from keras_rnn.quiet import load_tensorflow

    tf = load_tensorflow()
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows, size_rows, step_rows = [], [], []
    directory = Path(tempfile.mkdtemp(prefix="keras_rnn_bench_"))
    for size_name, size in SIZES.items():
        for cell in CELLS:
            keras.utils.set_random_seed(0)
            model = build_model(cell=cell, input_size=size["inputs"], hidden_size=size["hidden"],
                                output_size=size["inputs"], seq_len=size["steps"])
            x = np.random.default_rng(0).normal(size=(1, size["steps"], size["inputs"]))
            x = x.astype(np.float32)
            stem = directory / f"{size_name}_{cell}"
            onnx_model = load(export_onnx(model, stem.with_suffix(".onnx")))
            floor = load(native_op_only(stem.with_suffix(".onnx"), Path(f"{stem}_floor.onnx")))
            unrolled = load(export_tflite(model, stem.with_suffix(".tflite")))
            while_model = load(export_tflite(model, Path(f"{stem}_while.tflite"), form="while"))
            fused = load(export_tflite(model, Path(f"{stem}_fused.tflite"), form="fused")) \
                if cell == "lstm" else None
            tf2onnx_model = load(tf2onnx_export(model, Path(f"{stem}_tf2onnx.onnx")))
            compiled = tf.function(lambda v: model(v, training=False))
            x_time_major = np.ascontiguousarray(x.transpose(1, 0, 2))
            floor_ms = median_ms(lambda: floor.run(x_time_major), args.runs)
            timings = {
                "Keras tf.function": median_ms(lambda: compiled(x), max(args.runs // 3, 30)),
                "TFLite WHILE": median_ms(lambda: while_model.run(x), args.runs),
                "TFLite unrolled": median_ms(lambda: unrolled.run(x), args.runs),
                "TFLite fused": median_ms(lambda: fused.run(x), args.runs) if fused else None,
                "ORT export_onnx": median_ms(lambda: onnx_model.run(x), args.runs),
                "ORT tf2onnx": median_ms(lambda: tf2onnx_model.run(x), args.runs),
            }
            rows.append([size_name, cell] + [
                "n/a" if ms is None else f"{ms:.3f} ms ({ms / floor_ms:.1f}x)"
                for ms in timings.values()] + [f"{floor_ms:.3f} ms"])
            steps = [step_us(StepModel(export_step(model, Path(f"{stem}.step.{fmt}"))), args.runs)
                     for fmt in ("tflite", "onnx")]
            step_rows.append([size_name, cell] + [f"{us:.1f} us" for us in steps])
            if size_name == "medium":
                sizes = {"onnx": stem.with_suffix(".onnx").stat().st_size,
                         "tflite float32": stem.with_suffix(".tflite").stat().st_size}
                for variant in ("float16", "dynamic", "int8"):
                    path = export_tflite(model, Path(f"{stem}.{variant}.tflite"), quantize=variant,
                                         representative_data=np.concatenate([x] * 8))
                    sizes[f"tflite {variant}"] = path.stat().st_size
                size_rows.append([cell] + [f"{v / 1024:.0f} KiB" for v in sizes.values()])
    print(format_table(["size", "cell", "Keras tf.function", "TFLite WHILE", "TFLite unrolled",
                        "TFLite fused", "ORT export_onnx", "ORT tf2onnx",
                        "ORT native op (floor)"], rows))
    print()
    print(format_table(["size", "cell", "step per token, TFLite", "step per token, ORT"],
                       step_rows))
    print()
    print(format_table(["medium model", "onnx", "tflite float32", "tflite float16",
                        "tflite dynamic", "tflite int8"], size_rows))
    print()
    startup_rows = []
    for fmt in ("tflite", "onnx"):
        path = directory / f"lecture_lstm.{fmt}"
        free_seconds, free_rss = startup(path, "TF-free")
        tf_seconds, tf_rss = startup(path, "with TensorFlow")
        startup_rows.append([fmt, f"{free_seconds:.2f} s", f"{free_rss:.0f} MiB",
                             f"{tf_seconds:.2f} s", f"{tf_rss:.0f} MiB"])
    print(format_table(["load + first run", "TF-free: time", "TF-free: peak RSS",
                        "with TensorFlow: time", "with TensorFlow: peak RSS"], startup_rows))


if __name__ == "__main__":
    main()
