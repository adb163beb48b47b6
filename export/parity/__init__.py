"""Proof that an exported file computes what the Keras model computes.

- `verifier`: `verify` (a whole-sequence file) and `verify_step` (a streaming step model);
- `inputs`: the inputs compared on (the user's, held-out ones, padding patterns);
- `tolerances`: the bounds, each with its reason;
- `report`: `ParityReport` and the parity table.
"""

from export.parity.report import ParityReport, format_table
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.parity.verifier import verify, verify_step

__all__ = ["ONNX_TOLERANCE", "TFLITE_TOLERANCE", "ParityReport", "format_table", "verify",
           "verify_step"]
