"""The export formats and the quantization modes, as tables (Keras's `EXPORT_FORMATS` is the
model): the exporters, the loaders, `verify` and the command line read these rows instead of
comparing format names. A new format is one exporter module, one runtime loader and one row;
a new quantization mode is one row. (`verify` judges a file on values or on decisions by what
the file holds, reduced-precision tensors or not, never by a name it carries.)

Importing this module loads no exporter, runtime or TensorFlow: the rows name their
functions by import path, resolved on first use (`resolve`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE


@dataclass(frozen=True)
class Format:
    name: str  # the command line's --to value and a loaded file's `.format`
    suffix: str  # the file name's ending
    exporter: str  # "module:function" writing `(model, path, **options)`
    loader: str  # "module:class" opening a file in its runtime (export.runtime)
    options: tuple  # the export options the exporter takes (the pipeline passes these)
    tolerance: float  # verify's bound on float files (the reasons beside the constants)
    fixed_shape: bool  # True: batch and length are fixed in the file (verify runs in chunks)
    quantize: tuple  # the quantization modes it offers (None: float32)


@dataclass(frozen=True)
class QuantizeMode:
    name: str | None  # the `quantize=` value; None is float32
    needs_calibration: bool  # needs representative_data (the calibration inputs)
    # configure(converter, tf, calibration): the TFLite converter settings of this mode
    configure: Callable


def _float16(converter, tf, calibration) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _dynamic(converter, tf, calibration) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _int8(converter, tf, calibration) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = calibration
    # One scale per tensor, not per output channel (a channel's scale and zero point take 12
    # bytes beside its int8 weights): the same decisions on every model measured, smaller
    # files. Step files: 1.06-1.10x the parameter count in bytes instead of 1.27-1.36x
    # (medium LSTM/GRU; 96.9% vs 96.8% and 97.8% vs 97.9% of 50-step streams on random
    # weights, 91.8% vs 92.4% and 95.6% vs 95.5% on the trained character lecture).
    # Full-sequence files: 1.98x instead of 2.17x (LSTM), 2.64x instead of 2.82x (GRU), and
    # 100% of the hihello, sentiment and author lecture decisions either way, for each cell.
    # (The converter's switch for it has no public name.)
    converter._experimental_disable_per_channel = True


QUANTIZE_MODES = {mode.name: mode for mode in (
    QuantizeMode(None, needs_calibration=False,
                 configure=lambda converter, tf, calibration: None),
    QuantizeMode("dynamic", needs_calibration=False, configure=_dynamic),
    QuantizeMode("float16", needs_calibration=False, configure=_float16),
    QuantizeMode("int8", needs_calibration=True, configure=_int8),
)}

FORMATS = {fmt.name: fmt for fmt in (
    Format("tflite", ".tflite", exporter="export.tflite:export_tflite",
           loader="export.runtime.loaders:TFLiteModel",
           options=("batch_size", "seq_len", "quantize", "representative_data", "metadata",
                    "form"),
           tolerance=TFLITE_TOLERANCE, fixed_shape=True, quantize=tuple(QUANTIZE_MODES)),
    Format("onnx", ".onnx", exporter="export.onnx:export_onnx",
           loader="export.runtime.loaders:ONNXModel",
           options=("metadata", "quantize", "batch_size"),
           tolerance=ONNX_TOLERANCE, fixed_shape=False, quantize=(None, "dynamic", "float16")),
)}


def get_format(name: str) -> Format:
    """The format called `name`.

    Raises:
        ValueError: an unknown name, naming the known ones.
    """
    return _row(FORMATS, name, "export format")


def format_of(path) -> Format:
    """The format a file name ends in.

    Raises:
        ValueError: a suffix no format has, naming the known ones.
    """
    suffix = Path(path).suffix
    for fmt in FORMATS.values():
        if suffix == fmt.suffix:
            return fmt
    raise ValueError(f"Cannot tell the format of {str(path)!r}: end it in "
                     f"{' or '.join(fmt.suffix for fmt in FORMATS.values())}.")


def get_quantize_mode(name) -> QuantizeMode:
    """The quantization mode `name` (None for float32).

    Raises:
        ValueError: an unknown mode, naming the known ones.
    """
    return _row(QUANTIZE_MODES, name, "quantize")


def _row(table: dict, key, label: str):
    try:
        return table[key]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown {label} {key!r}: expected one of "
                         f"{', '.join(map(repr, table))}.") from None


def resolve(reference: str):
    """The function or class a row names as "module:attribute"."""
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)
