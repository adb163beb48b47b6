"""Test helpers shared by the test modules (not part of the library)."""

import numpy as np

CELLS = ("simple_rnn", "lstm", "gru")


def first_fast(values):
    """`values` for `pytest.mark.parametrize` with every case after the first marked slow: the
    fast tier (`pytest -m "not slow"`) checks one case of a concern, the full suite all."""
    import pytest

    return [value if index == 0 else pytest.param(value, marks=pytest.mark.slow)
            for index, value in enumerate(values)]


SHAPES = {"single": dict(), "stacked": dict(num_layers=2), "bidirectional": dict(bidirectional=True)}
INPUTS = {"one_hot": dict(), "embedding_mask": dict(inputs="embedding", embedding_dim=4,
                                                     mask_zero=True)}
SEQ_LEN = 9
# Every ONNX file is checked in each of these (export.runtime.engines): ONNX Runtime, the ONNX
# specification's reference evaluator, OpenVINO
ONNX_RUNTIMES = ("onnxruntime", "reference", "openvino")


def runtimes_for(path) -> tuple:
    """The runtimes a test runs an exported file in: LiteRT for .tflite; for .onnx every ONNX
    runtime the file claims (all of them unless its graph holds tf2onnx's `Loop` form)."""
    if not str(path).endswith(".onnx"):
        return ("litert",)
    import json

    from export.runtime import RUNTIMES_METADATA, load

    claimed = json.loads(load(path).metadata[RUNTIMES_METADATA])
    assert set(claimed) <= set(ONNX_RUNTIMES), claimed
    return tuple(claimed)


def lecture_model(cell, outputs, shape, inputs, **extra):
    """A seeded untrained lecture model: `outputs` "many_to_many" or "many_to_one", `shape` a
    key of SHAPES, `inputs` a key of INPUTS."""
    import keras

    from keras_rnn import build_model

    keras.utils.set_random_seed(7)
    return build_model(**{"cell": cell, "input_size": 6, "hidden_size": 5, "output_size": 4,
                          "return_sequences": outputs == "many_to_many", **SHAPES[shape],
                          **INPUTS[inputs], **extra})


def assert_outputs_close(name: str, actual, expected, tolerance: float) -> None:
    """Test helper: shape, dtype kind and values, with the max abs difference in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.dtype.kind != expected.dtype.kind:
        raise AssertionError(f"{name}: dtype {actual.dtype} != expected {expected.dtype}")
    difference = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=0, atol=tolerance,
        err_msg=f"{name}: max abs difference {difference:.3g} > tolerance {tolerance:g}",
    )
