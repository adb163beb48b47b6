"""Which LiteRT kernels run a batch-1 unrolled file faster on this machine, and what the
loader's choice costs.

LiteRT's default XNNPACK delegate packs a copy of the weights for each operator: an unrolled
file's recurrent weights once per step. Whether that copy is slower or faster than LiteRT's
builtin kernels at batch 1 depends on the CPU's caches, so `export.runtime.load` times both
when it opens such a file and keeps the faster. For each cell of the medium models (50 steps,
64 features, hidden 128, a Dense head per step; random seeded weights and biases), batch 1 on
1 thread, in one process: the unrolled file on the builtin kernels and on XNNPACK, the one
`load` picks, the WHILE file (XNNPACK), this project's ONNX file in ONNX Runtime (the native
operator's floor is 0.9x-1.0x of it, `benchmarks/latency.py`), the time `load` takes with the
timing and without it (`xnnpack=False`), and the memory each interpreter adds. Each time is the
median of `--rounds` rounds of the median of `--runs` calls, `+-` half the spread of the rounds
as a share; "(Nx)" is the time over ONNX Runtime's.

Run:  python benchmarks/litert_kernels.py [--runs 200] [--rounds 5]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from variants import timed  # noqa: E402

from export.table import format_table  # noqa: E402

STEPS, FEATURES, HIDDEN = 50, 64, 128

# The memory an interpreter adds, read in a child so that each starts from the same process.
_MEMORY = """
import sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
content = open(sys.argv[1], "rb").read()
options = ({} if sys.argv[2] == "xnnpack" else
           {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES})
before = resident()
interpreter = Interpreter(model_content=content, num_threads=1, **options)
interpreter.allocate_tensors()
interpreter.invoke()
print((resident() - before) / 2**20)
"""


def added_memory(path: Path, kernels: str) -> float:
    done = subprocess.run([sys.executable, "-c", _MEMORY, str(path), kernels],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from keras_rnn.quiet import load_tensorflow

    load_tensorflow()
    import keras

    from export import export_onnx, export_tflite
    from export.runtime import load
    from keras_rnn import CELLS, build_model

    directory = Path(tempfile.mkdtemp(prefix="keras_rnn_kernels_"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, STEPS, FEATURES)).astype(np.float32)
    table, choices = [], []
    progress = keras.utils.Progbar(len(CELLS), unit_name="cell")
    for index, cell in enumerate(CELLS):
        keras.utils.set_random_seed(0)
        model = build_model(cell=cell, input_size=FEATURES, hidden_size=HIDDEN, output_size=10,
                            seq_len=None)
        for layer in model.layers:  # nonzero biases, as trained models have
            owner = getattr(layer, "cell", layer)
            if getattr(owner, "bias", None) is not None:
                owner.bias.assign(rng.uniform(-0.5, 0.5, owner.bias.shape))
        unrolled = export_tflite(model, directory / f"{cell}.tflite", seq_len=STEPS)
        looped = export_tflite(model, directory / f"{cell}.while.tflite", seq_len=STEPS,
                               form="while")
        onnx = export_onnx(model, directory / f"{cell}.onnx")
        files = {"ONNX Runtime": load(onnx), "unrolled, builtin": load(unrolled, xnnpack=False),
                 "unrolled, XNNPACK": load(unrolled, xnnpack=True),
                 "WHILE, XNNPACK": load(looped)}
        times = {label: timed(lambda f=f: f.run(x), args.runs, args.rounds)
                 for label, f in files.items()}
        floor = times["ONNX Runtime"][0]
        picked = load(unrolled)
        opened = {"timed": [], "forced": []}
        for _ in range(args.rounds):
            for label, choice in (("timed", None), ("forced", False)):
                started = time.perf_counter()
                load(unrolled, xnnpack=choice)
                opened[label].append((time.perf_counter() - started) * 1e3)
        row = [cell]
        for label in files:
            ms, spread = times[label]
            row.append(f"{ms:.3f} ms +-{spread:.0%} ({ms / floor:.2f}x)")
        table.append(row)
        choices.append([cell, "XNNPACK" if picked.xnnpack else "builtin",
                        f"{picked.kernel_times['builtin']:.3f} / "
                        f"{picked.kernel_times['xnnpack']:.3f} ms",
                        f"{np.median(opened['timed']):.0f} ms",
                        f"{np.median(opened['forced']):.0f} ms",
                        f"{added_memory(unrolled, 'builtin'):.1f} MiB",
                        f"{added_memory(unrolled, 'xnnpack'):.1f} MiB"])
        progress.update(index + 1)
    print()
    print(format_table(["cell"] + [f"{label} (vs ORT)" for label in files], table))
    print()
    print(format_table(["cell", "load picks", "its timing: builtin / XNNPACK",
                        "load, timed", "load, xnnpack=False", "memory, builtin",
                        "memory, XNNPACK"], choices))


if __name__ == "__main__":
    main()
