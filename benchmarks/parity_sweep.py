"""Property-based parity over many seeds: the failure rate of both formats.

Runs `tests/sweep.py`'s `random_case(seed)` for `--cases` seeds from `--start`, exports each to
ONNX and TFLite, compares with Keras in ONNX Runtime and LiteRT, and prints the cases over
the tolerance (ONNX 1e-5, TFLite 1e-4) and the failure rate, with the overflowing models
(outputs beyond sweep.OVERFLOW) counted apart.

Run:  python benchmarks/parity_sweep.py [--cases 200] [--start 0]
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the case generator
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_rnn.quiet import load_tensorflow  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    load_tensorflow()
    import keras
    from sweep import check_case, random_case

    from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE

    failures, overflowing, worst = [], 0, {"onnx": 0.0, "tflite": 0.0}
    progress = keras.utils.Progbar(args.cases, unit_name="case")
    with tempfile.TemporaryDirectory() as directory:
        for seed in range(args.start, args.start + args.cases):
            case = random_case(seed)
            result = check_case(case, directory)
            if result["overflowing"]:
                overflowing += 1
            else:
                for fmt in worst:
                    worst[fmt] = max(worst[fmt], result[fmt])
                if result["onnx"] > ONNX_TOLERANCE or result["tflite"] > TFLITE_TOLERANCE:
                    failures.append((seed, case.description, result))
            progress.add(1)
    checked = args.cases - overflowing
    print(f"\n{args.cases} cases (seeds {args.start}-{args.start + args.cases - 1}): "
          f"{overflowing} overflowing, {checked} checked")
    print(f"worst max abs diff: onnx {worst['onnx']:.2e}, tflite {worst['tflite']:.2e}")
    print(f"failures over tolerance: {len(failures)}/{checked} "
          f"({len(failures) / max(checked, 1):.1%})")
    for seed, description, result in failures:
        print(f"  seed {seed}: {description}: {result}")


if __name__ == "__main__":
    main()
