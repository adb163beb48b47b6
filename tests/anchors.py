"""The anchors: the routes a user would take instead of this project, run as the user would
run them (Keras's own `model.export`), for the corpus comparison and
`benchmarks/anchors.py`. Not part of the library."""

import contextlib
import io
import logging
import warnings

import numpy as np

from keras_rnn.quiet import native_stderr_silenced

ANCHORS = {"tflite": "Keras model.export(format='litert'), builtins only, fixed batch",
           "onnx": "Keras model.export(format='onnx') (tf2onnx)"}


def anchor_outputs(model, fmt: str, path, feeds: dict, input_specs) -> list:
    """Writes the anchor's file for `fmt` at `path` and runs it on `feeds` (LiteRT without
    Flex; ONNX Runtime); returns the outputs in the model's order. Raises whatever the
    anchor or its runtime raises."""
    import keras
    import tensorflow as tf

    arrays = [feeds[name] for name, _, _ in input_specs]
    batch = len(arrays[0])
    signature = [keras.InputSpec(shape=((batch,) + array.shape[1:]) if fmt == "tflite"
                                 else (None,) + tuple(shape[1:]), dtype=dtype)
                 for (_, shape, dtype), array in zip(input_specs, arrays)]
    signature = signature if len(signature) > 1 else signature[0]
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.CRITICAL)  # its own error lines: the outcome is reported
    try:
        with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (Keras's tf2onnx shim warns about np.object)
            if fmt == "tflite":
                model.export(str(path), format="litert", input_signature=[signature],
                             verbose=False,
                             target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
            else:
                model.export(str(path), format="onnx", input_signature=[signature],
                             verbose=False)
    finally:
        tf2onnx_logger.setLevel(level)
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
        names = list(runner.get_input_details())
        results = runner(**dict(zip(names, (np.asarray(a) for a in arrays))))
        # (the signature's outputs are named output_0, output_1, ... in the model's order)
        return [results[name] for name in sorted(results, key=_number)]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {item.name: np.asarray(array).astype(_onnx_dtype(item.type))
            for item, array in zip(session.get_inputs(), arrays)}
    return session.run(None, feed)


def anchor_correct(model, fmt: str, path, feeds: dict, expected: list, tolerance: float,
                   input_specs) -> tuple[bool, str]:
    """Whether the anchor writes a file that gives `expected` within `tolerance`, and what
    happened (the max difference, or the anchor's error)."""
    try:
        actual = anchor_outputs(model, fmt, path, feeds, input_specs)
    except Exception as error:  # the anchor refused or crashed: no correct file
        text = str(error).strip()
        return False, f"{type(error).__name__}: {text.splitlines()[0][:120] if text else ''}"
    if len(actual) != len(expected):
        return False, f"{len(actual)} outputs for {len(expected)}"
    # each expected output against the anchor's closest output of its shape (the anchors name
    # and order their outputs their own way: the judgement leans the anchor's way)
    differences = []
    for value in expected:
        candidates = [float(np.max(np.abs(np.asarray(a, np.float64) - value))) if np.size(a)
                      else 0.0 for a in actual if np.shape(a) == np.shape(value)]
        if not candidates:
            return False, f"no output of shape {np.shape(value)}"
        differences.append(min(candidates))
    difference = max(differences)
    return bool(difference <= tolerance), f"max diff {difference:.1e}"


def _number(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 0


def _onnx_dtype(onnx_type: str):
    return {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
            "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
            "tensor(double)": np.float64}[onnx_type]
