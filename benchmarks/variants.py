"""Every file variant of the medium models side by side: size, speed at batch 1 and at a server
batch, and agreement with Keras, against the files a user would write instead.

For each cell (50 steps, 64 features, hidden 128, a Dense head per step; random seeded weights
and biases), in one process:
- TFLite: this project's float32 file (the form "auto" picks: unrolled), float16, dynamic,
  int8 (the form "auto" picks: the WHILE loop; and unrolled, and the fused int8 LSTM), and the
  peer, Keras's own builtins-only LiteRT route with a fixed batch (the converter's WHILE loop,
  `form="while"`);
- ONNX: this project's float32, float16 and dynamic (LSTM only: ONNX Runtime's quantizer leaves
  GRU and RNN operators in float32) files, the SimpleRNN file written for a server batch
  (`batch_size=64`: its Loop form), and the peer, tf2onnx's graph of the same model (what
  Keras's `model.export(format="onnx")` runs);
- the int8 step file (`export_step(quantize="int8")`): its size and one step's time.
Speed: batch 1 on 1 thread and batch 64 on 2 threads (TFLite files are written for each batch);
each figure is the median over `--rounds` rounds of the median of `--runs` calls, and `+-` is
half the spread of the round medians, as a share. "vs peer" is the peer's time over this file's
(above 1: this file is faster). Agreement: the share of the 64 x 50 per-step argmax decisions on
held-out random sequences that equal Keras's, and the largest absolute difference.

Run:  python benchmarks/variants.py [--runs 50] [--rounds 3] [--cells lstm gru simple_rnn]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import median_ms, step_us, tf2onnx_export  # noqa: E402

from export import export_onnx, export_tflite  # noqa: E402
from export.runtime import StepModel, load  # noqa: E402
from export.streaming import export_step  # noqa: E402
from export.table import format_table  # noqa: E402
from keras_rnn import CELLS, build_model  # noqa: E402

STEPS, FEATURES, HIDDEN, SERVER_BATCH = 50, 64, 128, 64


def timed(function, runs: int, rounds: int) -> tuple[float, float]:
    """The median of the round medians (ms) and half their spread as a share of it."""
    medians = [median_ms(function, runs) for _ in range(rounds)]
    middle = float(np.median(medians))
    return middle, (max(medians) - min(medians)) / 2 / middle


def variants(cell, model, directory: Path, calibration):
    """(format, label, writer(batch) -> path, is_peer) of every file compared."""
    stem = directory / cell

    def tflite(label, **options):
        return lambda batch: export_tflite(
            model, Path(f"{stem}.{label}.b{batch}.tflite"), batch_size=batch, seq_len=STEPS,
            representative_data=calibration if options.get("quantize") == "int8" else None,
            **options)

    def onnx(label, **options):
        path = Path(f"{stem}.{label}.onnx")
        return lambda batch: path if path.exists() else export_onnx(model, path, **options)

    rows = [("tflite", "float32", tflite("float32"), False),
            ("tflite", "float16", tflite("float16", quantize="float16"), False),
            ("tflite", "dynamic", tflite("dynamic", quantize="dynamic"), False),
            ("tflite", "int8", tflite("int8", quantize="int8"), False),
            ("tflite", "int8 unrolled", tflite("int8unrolled", quantize="int8",
                                               form="unrolled"), False)]
    if cell == "lstm":
        rows.append(("tflite", "int8 fused", tflite("int8fused", quantize="int8", form="fused"),
                     False))
    rows.append(("tflite", "Keras LiteRT (WHILE)", tflite("while", form="while"), True))
    rows += [("onnx", "float32", onnx("float32"), False),
             ("onnx", "float16", onnx("float16", quantize="float16"), False)]
    if cell == "simple_rnn":  # the forms picked for a server batch (LSTM, GRU: the same file)
        rows.append(("onnx", "float32, batch_size=64", onnx("server", batch_size=SERVER_BATCH),
                     False))
    if cell == "lstm":
        rows.append(("onnx", "dynamic", onnx("dynamic", quantize="dynamic"), False))
    peer = Path(f"{stem}.tf2onnx.onnx")
    rows.append(("onnx", "tf2onnx", lambda batch: peer if peer.exists() else tf2onnx_export(
        model, peer), True))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    args = parser.parse_args()
    from keras_rnn.quiet import load_tensorflow

    load_tensorflow()
    import keras

    directory = Path(tempfile.mkdtemp(prefix="keras_rnn_variants_"))
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(128, STEPS, FEATURES)).astype(np.float32)
    held_out = rng.normal(size=(SERVER_BATCH, STEPS, FEATURES)).astype(np.float32)
    table, steps = [], []
    for cell in args.cells:
        keras.utils.set_random_seed(0)
        model = build_model(cell=cell, input_size=FEATURES, hidden_size=HIDDEN, output_size=10,
                            seq_len=None)
        for layer in model.layers:  # nonzero biases, as trained models have
            owner = getattr(layer, "cell", layer)  # a recurrent layer's cell holds its bias
            if getattr(owner, "bias", None) is not None:
                owner.bias.assign(rng.uniform(-0.5, 0.5, owner.bias.shape))
        expected = np.asarray(model(held_out))
        results, peers = [], {}
        for fmt, label, write, is_peer in variants(cell, model, directory, calibration):
            started = time.perf_counter()
            timings, size, answer = {}, None, None
            for batch, threads in ((1, 1), (SERVER_BATCH, 2)):
                path = write(batch)
                size = path.stat().st_size
                exported = load(path, num_threads=threads, trusted=True)
                x = held_out[:batch]
                timings[batch] = timed(lambda: exported.run(x), args.runs, args.rounds)
                if batch == SERVER_BATCH:
                    answer = exported.run(held_out)
            agreement = float((answer.argmax(-1) == expected.argmax(-1)).mean())
            difference = float(np.abs(answer - expected).max())
            results.append((fmt, label, size, timings, agreement, difference, is_peer))
            if is_peer:
                peers[fmt] = timings
            print(f"{cell} {fmt} {label}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for fmt, label, size, timings, agreement, difference, is_peer in results:
            cells = [cell, fmt, label, f"{size / 1024:.0f} KiB"]
            for batch in (1, SERVER_BATCH):
                ms, spread = timings[batch]
                ratio = "" if is_peer else f" ({peers[fmt][batch][0] / ms:.2f}x)"
                cells.append(f"{ms:.3f} ms +-{spread:.0%}{ratio}")
            cells += [f"{agreement:.1%}", f"{difference:.1e}"]
            table.append(cells)
        path = export_step(model, directory / f"{cell}.step.int8.tflite", quantize="int8",
                           representative_data=calibration)
        float_path = export_step(model, directory / f"{cell}.step.tflite")
        steps.append([cell, f"{path.stat().st_size / 1024:.0f} KiB",
                      f"{path.stat().st_size / model.count_params():.2f}x",
                      f"{step_us(StepModel(path), args.runs * 4):.1f} us",
                      f"{step_us(StepModel(float_path), args.runs * 4):.1f} us"])
    print(format_table(["cell", "format", "file", "size", "batch 1, 1 thread (vs peer)",
                        f"batch {SERVER_BATCH}, 2 threads (vs peer)", "agreement",
                        "max abs diff"], table))
    print()
    print(format_table(["cell", "int8 step file", "x parameters", "int8 step", "float32 step"],
                       steps))


if __name__ == "__main__":
    main()
