"""Quantized ONNX (`export_onnx(..., quantize="dynamic")`, `export.onnx.quantize`): int8 LSTM and
MatMul through ONNX Runtime's own quantizer, judged on decisions; refused where the tool would
quantize nothing."""

import json

import numpy as np
import pytest
from helpers import first_fast

from export import export_onnx, verify
from export.runtime import RUNTIMES_METADATA, load


def _lstm_classifier(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20, 16))
    x = keras.layers.LSTM(48, bias_initializer="uniform")(inputs)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


@pytest.fixture(scope="module")
def lstm_classifier():
    return _lstm_classifier(0)


def test_dynamic_onnx_is_int8_smaller_and_claims_onnx_runtime_alone(tmp_path, lstm_classifier):
    import onnx

    float_path = export_onnx(lstm_classifier, tmp_path / "m.onnx")
    int8_path = export_onnx(lstm_classifier, tmp_path / "m.dynamic.onnx", quantize="dynamic")
    operators = {node.op_type for node in onnx.load(int8_path).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= operators and "LSTM" not in operators
    # int8 weights: about a quarter of the float32 file (measured 0.27x on the medium LSTM)
    assert int8_path.stat().st_size < 0.4 * float_path.stat().st_size
    # ONNX Runtime's contrib operators: the file claims that runtime alone
    assert json.loads(load(int8_path).metadata[RUNTIMES_METADATA]) == ["onnxruntime"]
    x = np.random.default_rng(1).normal(size=(64, 20, 16)).astype(np.float32)
    expected = np.asarray(lstm_classifier(x)).argmax(-1)
    agreement = float((load(int8_path).run(x).argmax(-1) == expected).mean())
    # random weights, near-tied decisions included: measured 100% here, 99% on the medium LSTM
    assert agreement >= 0.95, agreement
    # judged on decisions (random weights: some held-out rows are near ties, so a bound below
    # the default 100%); the float file on values
    report = verify(lstm_classifier, int8_path, min_agreement=0.8)
    assert report.passed and report.quantized and report.tolerance is None, str(report)


def test_a_trained_lstm_keeps_every_decision_in_dynamic_onnx(tmp_path, sentiment_results):
    """The lecture's sentiment LSTM through the command line's path: float and dynamic files,
    each verified on the lecture's own inputs (every decision kept) and held-out ones."""
    from export.pipeline import export_and_verify

    result = sentiment_results["lstm"]
    rows = export_and_verify(result["model"], tmp_path, "s", formats=["onnx"],
                             quantize=[None, "dynamic"], inputs=result["x"])
    assert [label for label, _ in rows] == ["s", "s.dynamic"]
    assert all(report.passed for _, report in rows), [str(report) for _, report in rows]
    assert rows[1][1].argmax_agreement == 1.0, str(rows[1][1])


def test_verify_fails_a_dynamic_onnx_file_of_another_model(tmp_path, lstm_classifier):
    path = export_onnx(_lstm_classifier(5), tmp_path / "other.onnx", quantize="dynamic")
    report = verify(lstm_classifier, path)
    assert not report.passed and report.argmax_agreement < 0.6, str(report)


@pytest.mark.parametrize("layer", first_fast(["GRU", "SimpleRNN"]))
def test_dynamic_onnx_refuses_a_model_the_tool_would_not_quantize(tmp_path, layer):
    import keras

    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, getattr(keras.layers, layer)(4)(inputs))
    operator = {"GRU": "GRU", "SimpleRNN": "RNN"}[layer]
    with pytest.raises(ValueError, match=f"leaves {operator} in float32"):
        export_onnx(model, tmp_path / "m.onnx", quantize="dynamic")
    with pytest.raises(ValueError, match="float16 and int8 are TFLite modes"):
        export_onnx(model, tmp_path / "m.onnx", quantize="int8")
    assert list(tmp_path.iterdir()) == []
