"""Never worse than the anchors: every corpus architecture through this project and through the
routes a user would take instead, in one run.

For each case of `tests/test_corpus.py` (public Keras architectures, seeded random weights, the
case's own inputs): the project's TFLite file (fixed batch) and ONNX file, each run in LiteRT /
ONNX Runtime against Keras, with the form each recurrent layer got; then the anchors, Keras's
own `model.export(format="litert")` with builtin ops only and a fixed batch, and
`model.export(format="onnx")` (tf2onnx), run the same way. A file is correct within the
verify bounds (TFLite 1e-4, ONNX 1e-5; the half-precision bound for a model that computes in
half precision). Prints the table, the counts, the slowest export, and every case where an
anchor is correct and the project is not (there should be none).

Run:  python benchmarks/anchors.py [--only NAME ...]   (about 10 minutes on 2 cores)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the corpus, anchors
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from keras_rnn.quiet import load_tensorflow  # noqa: E402


def _project(model, fmt, path, feeds, specs, expected, tolerance, batch):
    """(correct, summary, seconds) for the project's file."""
    from export import export_onnx, export_tflite
    from export.runtime import FORMS_METADATA, load

    lengths = {name: feeds[name].shape[1] for name, shape, _ in specs
               if len(shape) > 1 and shape[1] is None}
    start = time.perf_counter()
    try:
        if fmt == "tflite":
            export_tflite(model, path, batch_size=batch, seq_len=lengths or None)
        else:
            export_onnx(model, path)
    except ValueError as refusal:
        return False, f"refused: {str(refusal).splitlines()[0][:70]}", time.perf_counter() - start
    seconds = time.perf_counter() - start
    loaded = load(path)
    actual = loaded.run_named(feeds)
    difference = max(float(np.max(np.abs(np.asarray(actual[name], np.float64) - value)))
                     for name, value in expected.items())
    forms = sorted(set(json.loads(loaded.metadata.get(FORMS_METADATA, "{}")).values()))
    return difference <= tolerance, f"{'/'.join(forms) or '-'} {difference:.1e}", seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="case names (default: every case)")
    args = parser.parse_args()
    load_tensorflow()
    import keras
    from anchors import anchor_correct
    from test_corpus import BATCH, CASES

    from export.model.signature import exportable, half_precision, input_specs, keras_outputs
    from export.parity.tolerances import (
        HALF_PRECISION_TOLERANCE,
        ONNX_TOLERANCE,
        TFLITE_TOLERANCE,
    )

    cases = [case for case in CASES if not args.only or case.__name__ in args.only]
    rows, counts, slowest, worse = [], {}, (0.0, ""), []
    progress = keras.utils.Progbar(len(cases), unit_name="case")
    with tempfile.TemporaryDirectory() as directory:
        for index, build in enumerate(cases):
            keras.utils.set_random_seed(11)
            model, arrays = build(np.random.default_rng(11))
            view = exportable(model)
            specs = input_specs(view)
            feeds = dict(zip([name for name, _, _ in specs], arrays))
            expected = keras_outputs(view, feeds)
            half = HALF_PRECISION_TOLERANCE.get(half_precision(view), 0.0)
            row = [build.__name__]
            for fmt, bound in (("tflite", TFLITE_TOLERANCE), ("onnx", ONNX_TOLERANCE)):
                tolerance = max(bound, half)
                path = Path(directory) / f"{index}.{fmt}"
                ours, summary, seconds = _project(model, fmt, path, feeds, specs, expected,
                                                  tolerance, BATCH)
                anchor, what = anchor_correct(view, fmt, Path(directory) / f"{index}.anchor.{fmt}",
                                              feeds, list(expected.values()), tolerance, specs)
                row += [("ok " if ours else "NO ") + summary,
                        ("ok " if anchor else "NO ") + what]
                counts[(fmt, "project")] = counts.get((fmt, "project"), 0) + ours
                counts[(fmt, "anchor")] = counts.get((fmt, "anchor"), 0) + anchor
                slowest = max(slowest, (seconds, f"{build.__name__} ({fmt})"))
                if anchor and not ours:
                    worse.append(f"{build.__name__} {fmt}")
            rows.append(row)
            progress.update(index + 1)
    headers = ["case", "project TFLite (form, max diff)", "Keras LiteRT, builtins only",
               "project ONNX (form, max diff)", "Keras ONNX"]
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    print()
    for row in [headers] + rows:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    total = len(rows)
    print(f"\ncorrect files of {total} cases: TFLite project {counts[('tflite', 'project')]}, "
          f"Keras LiteRT {counts[('tflite', 'anchor')]}; ONNX project "
          f"{counts[('onnx', 'project')]}, Keras ONNX {counts[('onnx', 'anchor')]}")
    print(f"slowest project export: {slowest[1]} in {slowest[0]:.1f} s")
    print("anchor correct where the project is not: " + (", ".join(worse) or "none"))


if __name__ == "__main__":
    main()
