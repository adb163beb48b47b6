"""What an export costs: wall time, peak memory and file size, as the sequence grows.

An LSTM of hidden 512 (64 inputs, Dense head, batch 1) exported to TFLite at 50, 200 and 1000
steps in each builtin form (`unrolled`, what "auto" picks at these lengths, and the
converter's `while`), and to ONNX (whose size does not depend on the length). Every export
runs in a fresh process, so the peak resident memory (VmHWM, TensorFlow's own ~0.6 GB
included) is that export's alone; each figure is the median of `--runs` processes, with the
spread (min-max) beside it.

Run:  python benchmarks/export_cost.py [--runs 3]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = (50, 200, 1000)
FORMS = ("unrolled", "while", "onnx")

CHILD = """
import json, os, sys, time
steps, form, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
from keras_rnn.quiet import load_tensorflow
load_tensorflow()
import keras
from export import export_onnx, export_tflite
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((steps, 64)), keras.layers.LSTM(512), keras.layers.Dense(10)])
start = time.perf_counter()
if form == "onnx":
    export_onnx(model, path)
else:
    export_tflite(model, path, form=form)
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "size_kib": os.path.getsize(path) / 1024}))
"""


def measure(steps: int, form: str, directory: Path) -> dict:
    path = directory / f"lstm{steps}.{'onnx' if form == 'onnx' else 'tflite'}"
    completed = subprocess.run([sys.executable, "-c", CHILD, str(steps), form, str(path)],
                               capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def spread(values, unit: str, digits: int) -> str:
    return (f"{np.median(values):.{digits}f} {unit} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def main():
    import tempfile

    from export.table import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per figure")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for steps in STEPS:
            for form in FORMS:
                if form == "onnx" and steps != STEPS[0]:
                    continue  # the ONNX graph is the same for every length (time is dynamic)
                runs = [measure(steps, form, Path(directory)) for _ in range(args.runs)]
                rows.append((steps if form != "onnx" else "any", form,
                             spread([r["seconds"] for r in runs], "s", 1),
                             spread([r["peak_mib"] for r in runs], "MiB", 0),
                             f"{np.median([r['size_kib'] for r in runs]):.0f} KiB"))
    print(format_table(("steps", "form", "export time", "peak RSS", "file size"), rows))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
