"""Quantized ONNX files through ONNX Runtime's own tool (`onnxruntime.quantization`).

`quantize="dynamic"`: int8 weights, activations quantized on the fly, by
`quantize_dynamic(weight_type=QInt8, reduce_range=True)`: each `LSTM` becomes ONNX Runtime's
`DynamicQuantizeLSTM`, each `MatMul` a `MatMulInteger` (measured on the medium LSTM: 0.27x the
size, 2.0x faster at batch 1, 99% argmax agreement on random weights). `reduce_range` keeps 7-bit
weights: with 8 bits the int8 products saturate on CPUs without VNNI instructions (84% argmax
agreement measured there). The tool leaves `GRU` and `RNN` operators in float32 (1.0x size and
speed), so a model without an LSTM is refused rather than written as a "quantized" file that
is not. The file runs in ONNX Runtime alone (its contrib operators) and says so; `verify`
judges it on decisions, as quantized TFLite files.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from export.runtime.metadata import QUANTIZATION_METADATA, RUNTIMES_METADATA
from keras_rnn.structure import UnsupportedModelError

ONNX_QUANTIZE = (None, "dynamic")


def check_quantize(quantize) -> None:
    if quantize not in ONNX_QUANTIZE:
        raise ValueError(f"Unknown quantize {quantize!r} for ONNX; expected one of "
                         f"{[mode for mode in ONNX_QUANTIZE if mode]} or None (float32). "
                         "(float16 and int8 are TFLite modes.)")


def quantized(proto, quantize):
    """The `ModelProto` quantized as `quantize` names (None: `proto` itself)."""
    check_quantize(quantize)
    if quantize is None:
        return proto
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    operators = {node.op_type for node in proto.graph.node}
    if "LSTM" not in operators:
        recurrent = sorted(operators & {"GRU", "RNN", "Loop"})
        raise UnsupportedModelError(
            "quantize='dynamic' for ONNX: ONNX Runtime's quantizer turns LSTM operators and "
            f"MatMul into int8 and leaves {', '.join(recurrent) or 'the rest'} in float32, so "
            "this model (no LSTM) would keep its size and speed. Export the float32 .onnx, or "
            ".tflite with quantize='dynamic'.")
    logger = logging.getLogger()  # the tool logs its advice through the root logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as directory:
            source, target = Path(directory) / "float.onnx", Path(directory) / "int8.onnx"
            source.write_bytes(proto.SerializeToString())
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True)
            result = onnx.load(str(target))
    finally:
        logger.setLevel(level)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    metadata[QUANTIZATION_METADATA] = quantize
    metadata[RUNTIMES_METADATA] = json.dumps(["onnxruntime"])  # its contrib operators
    del result.metadata_props[:]
    for key, value in metadata.items():
        entry = result.metadata_props.add()
        entry.key, entry.value = key, value
    # (the tool keeps the IR version; a newer one would not load in onnxruntime 1.31)
    result.ir_version = min(result.ir_version, proto.ir_version)
    onnx.checker.check_model(result)
    return result
