"""python -m export MODEL.keras --to tflite onnx [--quantize dynamic] [--seq-len N] [--out DIR]
[--verify]

Exports a saved Keras RNN model and prints a parity table. Exit codes: 0 success, 1 a file
failed verification, 2 bad input (missing or corrupt model, unwritable output, unsupported
model); on any error no file of this run is left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a Keras RNN (.keras) to builtin-only TFLite and native-op ONNX.",
    )
    parser.add_argument("model", help="the saved Keras model (.keras)")
    parser.add_argument("--to", nargs="+", choices=("tflite", "onnx"), default=["tflite", "onnx"])
    parser.add_argument("--quantize", nargs="+", choices=("none", "dynamic", "float16", "int8"),
                        default=["none"], help="TFLite variants (default: none = float32)")
    parser.add_argument("--seq-len", type=int, help="TFLite sequence length (required when "
                        "the model accepts any length)")
    parser.add_argument("--batch-size", type=int, default=1, help="TFLite batch (default 1)")
    parser.add_argument("--form", choices=("auto", "unrolled", "while", "fused"), default="auto",
                        help="TFLite time loop (default auto: unrolled up to 1000 steps)")
    parser.add_argument("--calibration", help="a .npy of inputs for int8 calibration")
    parser.add_argument("--vocabulary", help="a vocabulary JSON (Vocabulary.to_json) to embed")
    parser.add_argument("--out", default=".", help="output directory (created if missing)")
    parser.add_argument("--verify", action="store_true",
                        help="run each file in its runtime and compare with Keras")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        rows = _run(args)
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    if args.verify:
        from export.pipeline import print_parity

        return 0 if print_parity(rows) else 1
    for label, path in rows:
        print(f"wrote {path} ({Path(path).stat().st_size} bytes)")
    return 0


def _run(args):
    import numpy as np

    model_path = Path(args.model)
    if model_path.suffix != ".keras":
        raise ValueError(f"{args.model!r} is not a .keras file (save with model.save('m.keras')).")
    if not model_path.is_file():
        raise ValueError(f"Model file {args.model!r} does not exist.")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create output directory {args.out!r}: {error.strerror}.")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"Output directory {args.out!r} is not writable.")
    quantize = [None if q == "none" else q for q in args.quantize]
    calibration = None
    if "int8" in quantize:
        if not args.calibration:
            raise ValueError("--quantize int8 needs --calibration FILE.npy: inputs to calibrate on.")
        calibration = np.load(args.calibration)
    metadata = None
    if args.vocabulary:
        from export.metadata import vocabulary_metadata
        from keras_rnn.vocab import Vocabulary

        metadata = vocabulary_metadata(
            Vocabulary.from_json(Path(args.vocabulary).read_text(encoding="utf-8")))

    import keras

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # zip, h5 or deserialization errors of every kind
        raise ValueError(
            f"Cannot load {args.model!r} as a Keras model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'corrupt file'})."
        ) from error

    from export.pipeline import export_and_verify

    # int8 calibrates on the --calibration inputs, and --verify compares on them when given
    return export_and_verify(
        model, out, model_path.stem, formats=args.to, quantize=quantize,
        batch_size=args.batch_size, seq_len=args.seq_len, inputs=calibration,
        metadata=metadata, verify_files=args.verify, form=args.form,
    )


if __name__ == "__main__":
    sys.exit(main())
