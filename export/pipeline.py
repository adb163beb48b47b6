"""Export one Keras model to every requested format and verify each file: what the command
line and the examples' `--export DIR` do. A library call: it prints nothing but an optional
progress bar and raises `VerificationFailed` (not `SystemExit`) when a file fails; the
command line and the examples print the tables."""

from __future__ import annotations

from pathlib import Path

from export._files import directory_lock, staged_in
from export.formats import FORMATS, format_of, get_format, get_quantize_mode, resolve


class VerificationFailed(ValueError):
    """An exported file does not compute what the Keras model computes; `rows` holds every
    file's `(label, ParityReport)`. None of the run's files were kept, and the output directory
    holds what it held before the run."""

    def __init__(self, rows):
        self.rows = rows
        failed = [label for label, report in rows if not report.passed]
        super().__init__(
            f"{', '.join(failed)} failed verification against the Keras model, so no file of "
            "this export was kept and the output directory is as it was (see the parity table).")


def export_model(model, path, **options):
    """Exports `model` to the format its path names (`export.formats`): `m.tflite`
    (`export_tflite`), `m.onnx` (`export_onnx`), `m.step.tflite` / `m.step.onnx`
    (`export.streaming.export_step`), with the options of that function. Returns the written
    path."""
    fmt = format_of(path)
    if Path(path).name.endswith(".step" + fmt.suffix):
        from export.streaming import export_step

        return export_step(model, path, **options)
    return resolve(fmt.exporter)(model, path, **options)


def check_formats(formats) -> None:
    for name in formats:
        get_format(name)  # raises, naming the known ones


def export_and_verify(
    model,
    directory,
    name: str,
    *,
    formats=tuple(FORMATS),
    quantize=(None,),
    batch_size: int | None = None,
    seq_len: int | None = None,
    inputs=None,
    metadata: dict | None = None,
    verify_files: bool = True,
    form: str = "auto",
    step: bool = False,
    progress: bool = False,
    checkpoint=None,
    min_agreement: float | None = None,
):
    """Writes `directory/name[.quantize].{tflite,onnx}` and verifies each one.

    Args:
        quantize: variants to write: None (float32), "dynamic" and "float16" (both formats),
            "int8" (TFLite); each format writes the ones it offers (`export.formats`).
            int8 calibrates on `inputs`, which it then needs.
        batch_size: the TFLite batch (default 1, or a stateful model's own batch).
        seq_len: the TFLite sequence length (default: the model's, or the inputs' length).
        inputs: the data to verify on (e.g. the lecture's); None for seeded random inputs.
        form: the TFLite time-loop form (`export.tflite.choose_form`).
        step: write streaming step models `name.step.{tflite,onnx}` (`export.streaming.export_step`)
            instead, verified by streaming held-out sequences (`export.parity.verify_step`).
            Chosen here, never from `name`: a model file called `x.step.keras` is exported
            like any other.
        progress: show Keras's progress bar over the files written and verified.
        checkpoint: called between files and right before publishing; raises to stop the
            run (the command line raises there when a stop signal arrived).
        min_agreement: quantized files' bound on the argmax agreement on `inputs` (default
            1.0, `export.parity.verify`); an int8 step file feeds its quantized state back at
            every step and keeps 92-96% of a trained lecture model's per-step decisions.

    Returns:
        A list of `(label, ParityReport)` rows (`(label, path)` with verify_files=False), in
        the order written.

    Raises:
        VerificationFailed: a file failed verification (its `rows` hold every report).
        Every file is written and verified in a private folder inside `directory` and reaches
        its final name only when all of them passed; on any failure or interruption none of
        them does, so a failed run leaves no partial set and keeps the files an earlier run
        wrote there. The directory is locked for the call: a second export into it at the
        same time is refused.
    """
    import numpy as np

    from export.parity.verifier import verify, verify_step

    check_formats(formats)
    for variant in quantize:
        get_quantize_mode(variant)  # raises, naming the known ones
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if seq_len is None and isinstance(inputs, dict):  # several inputs, by name
        seq_len = {name: int(np.shape(value)[1]) for name, value in inputs.items()
                   if np.ndim(value) > 1}
    elif seq_len is None and inputs is not None and not isinstance(inputs, (list, tuple)):
        seq_len = int(np.asarray(inputs).shape[1])
    planned = _planned_files(name, formats, quantize, step)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(planned) * (2 if verify_files else 1), unit_name="step")
    checkpoint = checkpoint or (lambda: None)
    with directory_lock(directory), staged_in(directory) as staging:
        written = []
        for file_name, fmt, variant in planned:
            checkpoint()
            staged = staging.path(file_name)
            if step:
                from export.streaming import export_step

                calibrated = get_quantize_mode(variant).needs_calibration
                written.append(export_step(model, staged, batch_size=batch_size or 1,
                                           metadata=metadata, quantize=variant,
                                           representative_data=inputs if calibrated else None))
            else:
                options = dict(batch_size=batch_size, seq_len=seq_len, quantize=variant,
                               representative_data=inputs if get_quantize_mode(
                                   variant).needs_calibration else None,
                               metadata=metadata, form=form)
                written.append(resolve(fmt.exporter)(
                    model, staged, **{key: options[key] for key in fmt.options}))
            _advance(bar)
        labels = [path.stem for path in written]  # label: name[.quantize]
        rows = []
        if verify_files:
            for label, path in zip(labels, written):
                checkpoint()
                # trusted: written a moment ago by this process into its private folder
                judge = verify_step if step else verify
                report = judge(model, path, inputs, trusted=True, min_agreement=min_agreement)
                rows.append((label, report))
                _advance(bar)
            if not all(report.passed for _, report in rows):
                raise VerificationFailed(rows)  # nothing published: never ship a failed file
        checkpoint()
        finals = staging.publish(written)
    if not verify_files:
        return list(zip(labels, finals))
    for (_, report), final in zip(rows, finals):
        report.path = str(final)
    return rows


def _planned_files(name: str, formats, quantize, step: bool) -> list[tuple]:
    """`(file name, Format, quantization)` of each file one run writes, in the registry's
    order: decided by the options, never read back from a name. A format that offers
    quantization modes gets one file per requested mode; the others one float32 file."""
    files = []
    for fmt in FORMATS.values():
        if fmt.name not in formats:
            continue
        variants = [v for v in quantize if v in fmt.quantize] if len(fmt.quantize) > 1 else [None]
        stem = f"{name}.step" if step else name
        files += [(f"{stem}{'' if v is None else '.' + v}{fmt.suffix}", fmt, v) for v in variants]
    return files


def _advance(bar) -> None:
    if bar is not None:  # the bar closes its line when it reaches its target
        bar.add(1)
