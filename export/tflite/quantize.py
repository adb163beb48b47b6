"""The calibration data of full-integer (int8) .tflite files, checked and batched.

The quantization modes themselves (converter settings, calibration needs, how `verify` judges
them) are rows of `export.formats.QUANTIZE_MODES`.
"""

from __future__ import annotations

import numpy as np

from export.formats import QUANTIZE_MODES

QUANTIZE = tuple(QUANTIZE_MODES)  # None (float32), "dynamic", "float16", "int8"


def calibration_batches(fixed, data, batch_size: int, signature=None):
    """Checks the int8 calibration data (an array for one input; a list in input order or a
    dict by input name for several), then yields it in the file's fixed batches. Every check
    runs before conversion: the converter's calibrator ends the whole process (segfault) on
    non-finite ranges instead of raising."""
    names = [name for name, _, _ in fixed]
    if isinstance(data, dict):
        missing = sorted(set(names) - set(data))
        if missing:
            raise ValueError(f"representative_data lacks inputs {missing}; it has {sorted(data)}.")
        arrays = [data[name] for name in names]
    elif len(fixed) > 1:
        if not isinstance(data, (list, tuple)) or len(data) != len(fixed):
            raise ValueError(f"representative_data must hold one array per input {names}, as a "
                             "list in that order or a dict by name.")
        arrays = list(data)
    else:
        arrays = [data]
    checked = []
    for (name, shape, dtype), array in zip(fixed, arrays):
        array = np.asarray(array)
        label = "representative_data" + (f"[{name!r}]" if len(fixed) > 1 else "")
        expected = shape[1:]
        if array.ndim != len(shape) or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{label} has shape {array.shape}; expected (n, "
                f"{', '.join(map(str, expected))}) matching the exported input.")
        if len(array) == 0:
            raise ValueError(f"{label} has shape {array.shape}: no rows to calibrate on.")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{label} holds {array.dtype} values; expected numbers.")
        integer = np.dtype(dtype).kind in "iu"
        if integer and array.dtype.kind == "f":
            raise ValueError(f"{label} must be integer token ids for this model; got "
                             f"{array.dtype} values.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise ValueError(
                f"{label} holds {bad} NaN or infinite values; int8 ranges need finite "
                "calibration data. Remove or replace those values.")
        if integer and array.min() < 0:
            raise ValueError(f"{label} holds negative ids ({array.min()}); ids start at 0.")
        checked.append(array.astype(dtype))
    if len({len(array) for array in checked}) != 1:
        raise ValueError("representative_data has a different number of rows per input: "
                         f"{[len(array) for array in checked]}.")

    def batches():  # by input name: the converter orders a signature's inputs its own way
        for start in range(0, len(checked[0]), batch_size):
            chunks = {}
            for name, array in zip(names, checked):
                chunk = array[start:start + batch_size]
                if len(chunk) < batch_size:  # repeat rows to fill the fixed batch
                    chunk = np.resize(chunk, (batch_size,) + chunk.shape[1:])
                chunks[name] = chunk
            yield chunks if signature is None else (signature, chunks)

    return batches
