"""Latency and file size of the exported forms, per cell, against the native-op floor.

For each cell at the lecture size (batch 1, 6 steps, 5 inputs, hidden 5) and a medium size
(batch 1, 50 steps, 64 inputs, hidden 128), all with a Dense head, single-threaded:
- Keras compiled call (`tf.function`), the baseline a Keras user has;
- TFLite WHILE loop: the converter on the Keras model with a fixed input shape;
- TFLite unrolled: `export_tflite` (what this project writes);
- ONNX Runtime on `export_onnx`'s graph;
- ONNX Runtime on a graph holding only the native RNN/LSTM/GRU operator: the floor.
Each figure is the median of many runs; ratios are to the floor of the same run, so read the
ratios rather than the absolute times on a shared machine. Then file sizes of the medium model.

Run:  python benchmarks/latency.py [--runs 300]
"""

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from export import export_onnx, export_tflite
from export.runtime import load
from keras_rnn import build_model
from keras_rnn.table import format_table

CELLS = ("simple_rnn", "lstm", "gru")
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


def while_loop_tflite(model, steps: int, inputs: int, target: Path) -> Path | None:
    """The converter's own form: the Keras model with a fixed shape -> a WHILE loop."""
    import keras
    import tensorflow as tf

    fixed = keras.Sequential([keras.Input((steps, inputs), batch_size=1)] + model.layers)
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel
            target.write_bytes(converter.convert())
    except Exception:  # noqa: BLE001 - reported as n/a in the table
        return None
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows, size_rows = [], []
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
            while_path = while_loop_tflite(model, size["steps"], size["inputs"],
                                           Path(f"{stem}_while.tflite"))
            while_model = load(while_path) if while_path else None
            compiled = tf.function(lambda v: model(v, training=False))
            x_time_major = np.ascontiguousarray(x.transpose(1, 0, 2))
            floor_ms = median_ms(lambda: floor.run(x_time_major), args.runs)
            timings = {
                "Keras tf.function": median_ms(lambda: compiled(x), max(args.runs // 3, 30)),
                "TFLite WHILE": median_ms(lambda: while_model.run(x), args.runs)
                if while_model else None,
                "TFLite unrolled": median_ms(lambda: unrolled.run(x), args.runs),
                "ORT export_onnx": median_ms(lambda: onnx_model.run(x), args.runs),
            }
            rows.append([size_name, cell] + [
                "n/a" if ms is None else f"{ms:.3f} ms ({ms / floor_ms:.1f}x)"
                for ms in timings.values()] + [f"{floor_ms:.3f} ms"])
            if size_name == "medium":
                sizes = {"onnx": stem.with_suffix(".onnx").stat().st_size,
                         "tflite float32": stem.with_suffix(".tflite").stat().st_size}
                for variant in ("float16", "dynamic", "int8"):
                    path = export_tflite(model, Path(f"{stem}.{variant}.tflite"), quantize=variant,
                                         representative_data=np.concatenate([x] * 8))
                    sizes[f"tflite {variant}"] = path.stat().st_size
                size_rows.append([cell] + [f"{v / 1024:.0f} KiB" for v in sizes.values()])
    print(format_table(["size", "cell", "Keras tf.function", "TFLite WHILE", "TFLite unrolled",
                        "ORT export_onnx", "ORT native op (floor)"], rows))
    print()
    print(format_table(["medium model", "onnx", "tflite float32", "tflite float16",
                        "tflite dynamic", "tflite int8"], size_rows))


if __name__ == "__main__":
    main()
