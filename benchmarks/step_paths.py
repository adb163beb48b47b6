"""The two step-model paths side by side: the hand-written chain graphs (what `export.step`
wrote for lecture chains until the general path replaced it; they remain for translators'
decoders, `export.seq2seq.decoder_step_*`) and the general path (`export.streaming`:
clone_model with step stand-ins, the usual converters), which every step model now takes.

For each lecture chain (the three cells; one-hot hihello-size input, and a char model with an
Embedding and two layers at a medium size), both paths write a step model in both formats; the
table gives each file's size and the median per-token latency (state carried from call to
call, one thread) in LiteRT and ONNX Runtime, measured in the same run, and the ratio of the
general path to the chain path. Both files are first checked against each other on a short
stream (they must agree within float32 noise).

Run:  python benchmarks/step_paths.py [--runs 2000]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency import step_us  # noqa: E402

from export.runtime import StepModel  # noqa: E402
from export.table import format_table  # noqa: E402
from keras_rnn import CELLS, build_model  # noqa: E402

MODELS = {
    "hihello (one-hot 5, hidden 5)": dict(input_size=5, hidden_size=5, output_size=5),
    "char (ids 64, emb 32, 2x128)": dict(input_size=64, hidden_size=128, output_size=64,
                                         num_layers=2, inputs="embedding", embedding_dim=32),
}


def stream(step_model, sequence):
    state, outputs = step_model.initial_state(len(sequence)), []
    for t in range(sequence.shape[1]):
        output, state = step_model.step(sequence[:, t], state)
        outputs.append(output)
    return np.stack(outputs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    import keras

    from export.onnx.exporter import DEFAULT_OPSET
    from export.seq2seq import decoder_step_onnx, decoder_step_tflite
    from export.streaming import graph_step_onnx, graph_step_tflite
    from keras_rnn.structure import read_model

    writers = {
        ("chain", "tflite"): lambda m: decoder_step_tflite(read_model(m), batch_size=1,
                                                           metadata=None),
        ("chain", "onnx"): lambda m: decoder_step_onnx(
            read_model(m), name="step", opset=DEFAULT_OPSET, metadata=None).SerializeToString(),
        ("general", "tflite"): lambda m: graph_step_tflite(m, batch_size=1, metadata=None),
        ("general", "onnx"): lambda m: graph_step_onnx(
            m, opset=DEFAULT_OPSET, metadata=None).SerializeToString(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, options in MODELS.items():
            for cell in CELLS:
                keras.utils.set_random_seed(0)
                model = build_model(cell=cell, **options)
                measured = {}
                for (path_kind, fmt), write in writers.items():
                    path = Path(folder) / f"{cell}_{path_kind}.step.{fmt}"
                    path.write_bytes(write(model))
                    step_model = StepModel(path, trusted=True)
                    measured[path_kind, fmt] = (path.stat().st_size, step_model)
                sequence = (np.random.default_rng(0).integers(1, 64, (1, 5)).astype(np.int32)
                            if options.get("inputs") == "embedding" else
                            np.random.default_rng(0).normal(size=(1, 5, 5)).astype(np.float32))
                for fmt in ("tflite", "onnx"):
                    chain = stream(measured["chain", fmt][1], sequence)
                    general = stream(measured["general", fmt][1], sequence)
                    assert np.abs(chain - general).max() < 1e-5, (cell, fmt)
                    times = {kind: step_us(measured[kind, fmt][1], args.runs)
                             for kind in ("chain", "general")}
                    sizes = {kind: measured[kind, fmt][0] for kind in ("chain", "general")}
                    rows.append((label, cell, fmt, f"{sizes['chain'] / 1024:.1f}",
                                 f"{sizes['general'] / 1024:.1f}",
                                 f"{sizes['general'] / sizes['chain']:.2f}x",
                                 f"{times['chain']:.1f}", f"{times['general']:.1f}",
                                 f"{times['general'] / times['chain']:.2f}x"))
    print(format_table(("model", "cell", "format", "chain KiB", "general KiB", "size ratio",
                        "chain us/token", "general us/token", "time ratio"), rows))


if __name__ == "__main__":
    main()
