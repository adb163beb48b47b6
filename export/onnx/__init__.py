"""Keras model -> ONNX with the native recurrent operators (`RNN`, `LSTM`, `GRU`).

- `exporter`: `export_onnx` / `build_onnx`: tf2onnx for the whole graph, the file checked;
- `splice`: the recurrent layers as opaque markers through tf2onnx, then native operators;
- `operators`: the operator nodes with Keras's weights, activations, NaN and directions;
- `masks`: Keras's masks for any padding pattern with the operators.
"""

from export.onnx.exporter import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, build_onnx, export_onnx

__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "build_onnx", "export_onnx"]
