"""python -m export MODEL.keras --to tflite onnx [--quantize dynamic] [--seq-len N] [--out DIR]
[--verify] [--step] [--trust-python-layers] [--custom-objects MODULE ...]

Exports a saved Keras RNN model and prints a parity table. The files are named from `--out`
and the model file's stem alone: `DIR/STEM.tflite`, `DIR/STEM.QUANTIZE.tflite`, `DIR/STEM.onnx`,
or with `--step` the streaming step models `DIR/STEM.step.tflite` / `DIR/STEM.step.onnx`; what is
written is chosen by the options, never by the model file's name.

Exit codes: 0 success, 1 a file failed verification, 2 a refusal, printed as one line with
no traceback (missing or corrupt model, unwritable output, a model or option no export
writes, a converter's own error), 128 + N when stopped by signal N (SIGINT, SIGTERM,
SIGHUP). Files are written and verified in a private folder inside `--out` and reach their
names only when every one of them passed: on any error or stop, no file of this run is left
behind and the files an earlier run wrote there are kept.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path

from export.formats import FORMATS, QUANTIZE_MODES  # noqa: E402  (loads no exporter)

MAX_BATCH_SIZE = 4096  # a fixed TFLite batch beyond this is a typo, not a device's batch
# (SIGHUP is POSIX only)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
# A .keras archive is read only within these bounds, checked on its zip directory before Keras
# opens it, so a small archive that inflates to gigabytes is refused at once with bounded
# memory. Keras stores members uncompressed (about 1:1); DEFLATE reaches about 1000:1.
MAX_CONFIG_BYTES = 64 << 20  # config.json / metadata.json: a model of thousands of layers is a few MB
MAX_ARCHIVE_BYTES = 16 << 30  # every member together, uncompressed
MAX_EXPANSION = 100  # uncompressed / stored, for members over EXPANSION_FLOOR_BYTES
EXPANSION_FLOOR_BYTES = 1 << 20


class Stopped(BaseException):
    """A stop signal arrived: raised where the program is, so every cleanup runs on the way
    out, for SIGTERM (timeout, docker stop, systemd) and SIGHUP as for Ctrl-C. A BaseException,
    like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_STOP = {"signum": None}  # the stop signal received, if any


def _stop(signum, frame):
    # Raised where the program is; recorded too, since an exception raised inside a
    # finalizer or a library's catch-all is lost: the pipeline's checkpoints raise it again.
    _STOP["signum"] = signum
    raise Stopped(signum)


def _checkpoint() -> None:
    """Raises `Stopped` if a stop signal arrived (between files and before publishing)."""
    if _STOP["signum"] is not None:
        raise Stopped(_STOP["signum"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a Keras RNN (.keras) to builtin-only TFLite and native-op ONNX.",
    )
    parser.add_argument("model", help="the saved Keras model (.keras)")
    parser.add_argument("--to", nargs="+", choices=tuple(FORMATS), default=list(FORMATS))
    parser.add_argument("--quantize", nargs="+", default=["none"],
                        choices=tuple("none" if mode is None else mode for mode in QUANTIZE_MODES),
                        help="variants to write (default: none = float32): dynamic and "
                        "float16 for both formats (ONNX dynamic: models with LSTM layers), "
                        "int8 for TFLite")
    parser.add_argument("--seq-len", type=int, help="TFLite sequence length (required when "
                        "the model accepts any length)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the batch the files run at: TFLite's fixed batch (default 1, "
                        "or a stateful model's own batch); ONNX files take any batch and pick "
                        "their forms for this one (SimpleRNN as a Loop from 16 on)")
    parser.add_argument("--form", choices=("auto", "unrolled", "while", "fused"), default="auto",
                        help="TFLite time loop (default auto: unrolled up to 500 cell steps, "
                        "a WHILE loop beyond)")
    parser.add_argument("--step", action="store_true",
                        help="write streaming step models (STEM.step.tflite / STEM.step.onnx: "
                        "one step in, the state carried by the caller) instead of sequence "
                        "models; --verify streams held-out sequences through them")
    parser.add_argument("--calibration", help="a .npy of inputs for int8 calibration (an .npz "
                        "by input name for a model with several inputs); --verify compares on "
                        "it too")
    parser.add_argument("--min-agreement", type=float, metavar="FRACTION",
                        help="with --verify: the share of the --calibration inputs' decisions "
                        "a quantized file must keep (default 1.0)")
    parser.add_argument("--vocabulary", help="a vocabulary JSON (Vocabulary.to_json) to embed")
    parser.add_argument("--out", default=".", help="output directory (created if missing)")
    parser.add_argument("--verify", action="store_true",
                        help="run each file in its runtime and compare with Keras; a file that "
                        "fails is not kept (exit 1)")
    parser.add_argument("--trust-python-layers", action="store_true",
                        help="load a .keras file that holds Python code (Lambda layers): only "
                        "for files you wrote or trust, since loading runs that code")
    parser.add_argument("--custom-objects", nargs="+", default=[], metavar="MODULE",
                        help="import these modules (dotted names importable from the current "
                        "directory, or .py files) before loading, so that the custom layers "
                        "and cells they register with @keras.saving.register_keras_serializable "
                        "are known: runs their code, so only for modules you trust")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _STOP["signum"] = None
    previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    try:
        return _main(args)
    except (Stopped, KeyboardInterrupt) as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"\nstopped by {signal.Signals(signum).name}: no file of this run was kept",
              file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(args) -> int:
    from export.pipeline import VerificationFailed

    try:
        rows = _run(args)
    except VerificationFailed as failure:
        _print_parity(failure.rows)
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        _checkpoint()  # a stop signal lost inside a library's code surfaces as its error
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as error:  # a library's own exception: still one line, no traceback
        # a Stopped raised inside an import comes back as a SystemError/TypeError: the stop
        # signal wins (exit 128 + N), as the run was stopped
        _checkpoint()
        lines = str(error).strip().splitlines()
        print(f"error: {type(error).__name__}: {lines[0] if lines else 'no message'}",
              file=sys.stderr)
        return 2
    if args.verify:
        _print_parity(rows)
        return 0
    for _, path in rows:
        print(f"wrote {path} ({Path(path).stat().st_size} bytes)")
    return 0


def _print_parity(rows) -> None:
    from export.parity.report import format_table

    print()
    print(format_table(rows))


def _run(args):
    model_path = Path(args.model)
    if model_path.suffix != ".keras":
        raise ValueError(f"{args.model!r} is not a .keras file (save with model.save('m.keras')).")
    if not model_path.is_file():
        raise ValueError(f"Model file {args.model!r} does not exist.")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be from 1 to {MAX_BATCH_SIZE}; got "
                         f"{args.batch_size}.")
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise ValueError(f"--min-agreement is a share of decisions, from 0 to 1; got "
                         f"{args.min_agreement}.")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create output directory {args.out!r}: {error.strerror}.") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"Output directory {args.out!r} is not writable.")
    quantize = [None if q == "none" else q for q in args.quantize]
    calibration = None
    calibrated = [mode for mode in quantize if QUANTIZE_MODES[mode].needs_calibration]
    if calibrated:
        if not args.calibration:
            raise ValueError(f"--quantize {calibrated[0]} needs --calibration FILE.npy: inputs "
                             "to calibrate on.")
        calibration = _load_calibration(args.calibration)
    metadata = None
    if args.vocabulary:
        from export.metadata import vocabulary_metadata
        from keras_rnn.vocab import Vocabulary

        try:
            text = Path(args.vocabulary).read_bytes()
            metadata = vocabulary_metadata(Vocabulary.from_json(text))
        except (OSError, ValueError) as error:
            raise ValueError(f"--vocabulary {args.vocabulary!r}: "
                             f"{getattr(error, 'strerror', None) or error}") from None

    _import_custom_objects(args.custom_objects)
    model = _load_model(model_path, trust_python_layers=args.trust_python_layers)

    from export.pipeline import export_and_verify

    # int8 calibrates on the --calibration inputs, and --verify compares on them when given
    return export_and_verify(
        model, out, model_path.stem, formats=args.to, quantize=quantize,
        batch_size=args.batch_size, seq_len=args.seq_len, inputs=calibration,
        metadata=metadata, verify_files=args.verify, form=args.form, step=args.step,
        progress=True, checkpoint=_checkpoint, min_agreement=args.min_agreement,
    )


def _load_calibration(path):
    """The int8 calibration inputs: a numeric .npy array of shape (n, steps[, features]), or
    an .npz of one such array per input name for a model with several inputs."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"--calibration file {path!r} does not exist.") from None
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"--calibration {path!r} is not a readable .npy array ({error}); save "
                         "one with numpy.save.") from None
    if isinstance(data, np.ndarray):
        return _checked_calibration(path, data)
    try:  # np.load opens any zip file as an .npz archive
        arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"--calibration {path!r} is not a readable .npz of arrays by input name "
                         f"({error}); save one with numpy.savez(path, name=x, ...).") from None
    finally:
        data.close()
    if not arrays:
        raise ValueError(f"--calibration {path!r} holds no arrays.")
    return {name: _checked_calibration(f"{path}[{name!r}]", array)
            for name, array in arrays.items()}


def _checked_calibration(label, data):
    import numpy as np

    if not isinstance(data, np.ndarray):  # a zip member that is not an array
        raise ValueError(f"--calibration {label!r} is not a readable .npz of arrays by input "
                         "name; save one with numpy.savez(path, name=x, ...).")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"--calibration {label!r} must hold numbers; got {data.dtype} values.")
    if data.ndim < 2 or data.size == 0:
        raise ValueError(f"--calibration {label!r} has shape {data.shape}; expected (n, steps) "
                         "ids or (n, steps, features) with n >= 1.")
    return data


def _import_custom_objects(modules) -> None:
    """Imports each `--custom-objects` module (a dotted name or a .py file); what it registers
    with `keras.saving.register_keras_serializable` is then known to `load_model`."""
    import importlib
    import importlib.util

    for module in modules:
        try:
            if module.endswith(".py"):
                if not Path(module).is_file():
                    raise ValueError(f"{module!r} does not exist")
                spec = importlib.util.spec_from_file_location(Path(module).stem, module)
                imported = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = imported
                spec.loader.exec_module(imported)
            else:
                importlib.import_module(module)
        except Exception as error:  # the module's own code raised
            lines = str(error).strip().splitlines()
            raise ValueError(f"--custom-objects {module!r} could not be imported "
                             f"({type(error).__name__}: {lines[0] if lines else ''}).") from None


def _load_model(model_path: Path, *, trust_python_layers: bool):
    import zipfile

    if not zipfile.is_zipfile(model_path):
        raise ValueError(f"{str(model_path)!r} is not a .keras archive (a zip file written by "
                         "model.save('m.keras')); it may be corrupt or truncated.")
    _check_archive(model_path)  # before TensorFlow starts: a bomb is refused at once

    from keras_rnn.quiet import load_tensorflow

    load_tensorflow()
    import keras

    import keras_rnn.seq2seq  # noqa: F401  (registers the translators' VocabularyEmbedding)

    try:
        return keras.models.load_model(model_path, compile=False,
                                       safe_mode=not trust_python_layers)
    except Exception as error:  # zip, h5 or deserialization errors of every kind
        text = str(error)
        if "safe_mode" in text or "Lambda" in text:
            raise ValueError(
                f"{str(model_path)!r} holds Python code (a Lambda layer or similar), which is "
                "not loaded by default because loading runs it. If you wrote the file or "
                "trust it, add --trust-python-layers.") from None
        unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
        if unknown:
            raise ValueError(
                f"{str(model_path)!r} uses {unknown.group(1)!r}, which is not registered here: "
                "pass --custom-objects MODULE, the module that defines it with "
                "@keras.saving.register_keras_serializable().") from None
        first_line = text.strip().splitlines()[0] if text.strip() else "corrupt file"
        raise ValueError(
            f"Cannot load {str(model_path)!r} as a Keras model: the archive is damaged or was "
            f"not written by Keras 3 ({type(error).__name__}: {first_line})."
        ) from None


def _check_archive(model_path: Path) -> None:
    """Refuses a .keras archive whose declared sizes exceed the bounds above (zipfile never
    inflates a member past its declared size, so these bound what loading reads)."""
    import zipfile

    try:
        with zipfile.ZipFile(model_path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{str(model_path)!r} is not a readable .keras archive ({error}).") from None
    total = 0
    for member in members:
        total += member.file_size
        large = member.file_size > EXPANSION_FLOOR_BYTES
        if member.filename in ("config.json", "metadata.json") and member.file_size > MAX_CONFIG_BYTES:
            reason = f"its {member.filename} inflates to {member.file_size} bytes"
        elif large and member.file_size > MAX_EXPANSION * max(member.compress_size, 1):
            reason = (f"its member {member.filename!r} inflates {member.compress_size} stored "
                      f"bytes to {member.file_size}")
        elif total > MAX_ARCHIVE_BYTES:
            reason = f"its members inflate to more than {MAX_ARCHIVE_BYTES} bytes"
        else:
            continue
        raise ValueError(f"{str(model_path)!r} is refused: {reason}, more than a Keras model "
                         "archive holds (a decompression bomb?).")


if __name__ == "__main__":
    sys.exit(main())
