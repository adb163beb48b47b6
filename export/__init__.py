"""Keras RNN -> builtin-only TFLite and native-op ONNX, with parity proven in the real runtimes.

The public names load their module on first use (PEP 562), so `import export.runtime` on a
device loads neither the exporters nor TensorFlow, Keras or the training code.
"""

import importlib

_EXPORTS = {
    "export_model": "export.pipeline",
    "export_onnx": "export.onnx",
    "export_tflite": "export.tflite",
    "format_table": "export.parity",
    "ParityReport": "export.parity",
    "verify": "export.parity",
    "verify_step": "export.parity",
    "vocabulary_metadata": "export.metadata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
