"""Export one Keras model to every requested format and verify each file: what the command
line and the examples' `--export DIR` do. A library call: it prints nothing but an optional
progress bar and raises `VerificationFailed` (not `SystemExit`) when a file fails; the
command line and the examples print the tables."""

from __future__ import annotations

from pathlib import Path

from export._files import directory_lock, removed_on_failure

FORMATS = ("tflite", "onnx")


class VerificationFailed(ValueError):
    """An exported file does not compute what the Keras model computes; `rows` holds every
    file's `(label, ParityReport)`. None of the run's files were kept."""

    def __init__(self, rows):
        self.rows = rows
        failed = [label for label, report in rows if not report.passed]
        super().__init__(
            f"{', '.join(failed)} failed verification against the Keras model, so no file of "
            "this export was kept (see the parity table).")


def export_model(model, path, **options):
    """Exports `model` to the format its path names: `m.tflite` (`export_tflite`), `m.onnx`
    (`export_onnx`), `m.step.tflite` / `m.step.onnx` (`export.step.export_step`), with the
    options of that function. Returns the written path."""
    name = Path(path).name
    if name.endswith((".step.tflite", ".step.onnx")):
        from export.step import export_step

        return export_step(model, path, **options)
    if name.endswith(".tflite"):
        from export.tflite import export_tflite

        return export_tflite(model, path, **options)
    if name.endswith(".onnx"):
        from export.onnx import export_onnx

        return export_onnx(model, path, **options)
    raise ValueError(f"Cannot tell the format of {str(path)!r}: end it in .tflite, .onnx, "
                     ".step.tflite or .step.onnx.")


def check_formats(formats) -> None:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"Unknown export formats {unknown}: expected some of {list(FORMATS)}.")


def export_and_verify(
    model,
    directory,
    name: str,
    *,
    formats=FORMATS,
    quantize=(None,),
    batch_size: int | None = None,
    seq_len: int | None = None,
    inputs=None,
    metadata: dict | None = None,
    verify_files: bool = True,
    form: str = "auto",
    progress: bool = False,
):
    """Writes `directory/name[.quantize].{tflite,onnx}` and verifies each one.

    Args:
        quantize: TFLite variants to write: None (float32), "dynamic", "float16", "int8".
            int8 calibrates on `inputs`, which it then needs.
        batch_size: the TFLite batch (default 1, or a stateful model's own batch).
        seq_len: the TFLite sequence length (default: the model's, or the inputs' length).
        inputs: the data to verify on (e.g. the lecture's); None for seeded random inputs.
        form: the TFLite time-loop form (`export.tflite.choose_form`).
        progress: show Keras's progress bar over the files written and verified.

    Returns:
        A list of `(label, ParityReport)` rows (`(label, path)` with verify_files=False), in
        the order written.

    Raises:
        VerificationFailed: a file failed verification (its `rows` hold every report).
        If any export or verification fails, the files this call already wrote are removed
        before the error propagates, so a failed run leaves no partial set behind. The
        directory is locked for the call: a second export into it at the same time is refused.
    """
    import numpy as np

    from export.parity import verify

    check_formats(formats)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if seq_len is None and isinstance(inputs, dict):  # several inputs, by name
        seq_len = {name: int(np.shape(value)[1]) for name, value in inputs.items()
                   if np.ndim(value) > 1}
    elif seq_len is None and inputs is not None and not isinstance(inputs, (list, tuple)):
        seq_len = int(np.asarray(inputs).shape[1])
    files = len(quantize) * ("tflite" in formats) + ("onnx" in formats)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(files * (2 if verify_files else 1), unit_name="step")
    with directory_lock(directory), removed_on_failure() as written:
        if "tflite" in formats:
            for variant in quantize:
                suffix = "" if variant is None else f".{variant}"
                written.append(export_model(
                    model, directory / f"{name}{suffix}.tflite", batch_size=batch_size,
                    seq_len=seq_len, quantize=variant,
                    representative_data=inputs if variant == "int8" else None,
                    metadata=metadata, form=form,
                ))
                _advance(bar)
        if "onnx" in formats:
            written.append(export_model(model, directory / f"{name}.onnx", metadata=metadata))
            _advance(bar)
        labelled = [(path.stem, path) for path in written]  # label: name[.quantize]
        if not verify_files:
            return labelled
        rows = []
        for label, path in labelled:
            rows.append((label, verify(model, path, inputs)))
            _advance(bar)
        if not all(report.passed for _, report in rows):
            raise VerificationFailed(rows)  # removes the files: never ship a failed one
    return rows


def _advance(bar) -> None:
    if bar is not None:  # the bar closes its line when it reaches its target
        bar.add(1)
