"""Quantized streaming step models (`export_step(..., quantize=...)`): the int8 step file is the
microcontroller's file, about its parameters' size, calibrated on the states the float step
reaches; every mode is judged on decisions by `verify_step`, and a wrong file fails it."""

import numpy as np
import pytest
from helpers import first_fast

from export.parity import verify_step
from export.streaming import export_step

FEATURES, STEPS = 64, 20  # the medium models' width (the size target is stated for them)


def _tagger(seed, cell="LSTM", units=128):
    """A sequence tagger (one decision per step) with random seeded weights and biases."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, FEATURES))
    x = getattr(keras.layers, cell)(units, bias_initializer="uniform", return_sequences=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(6)(x))


def _sequences(seed, rows):
    return np.random.default_rng(seed).normal(size=(rows, STEPS, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("cell", first_fast(["LSTM", "GRU"]))
def test_int8_step_file_is_about_its_parameters_and_keeps_decisions(tmp_path, cell):
    from ai_edge_litert import schema_py_generated as schema

    from export.runtime.metadata import tflite_tensors

    model = _tagger(0, cell)
    path = export_step(model, tmp_path / "m.step.int8.tflite", quantize="int8",
                       representative_data=_sequences(1, 24))
    # one byte per parameter and little else: measured 1.064x (LSTM) and 1.098x (GRU), the
    # issue's target 1.1x, with room for a longer metadata entry; per-channel scales would be
    # 1.27-1.36x, the tensors' names 1.11-1.12x
    ratio = path.stat().st_size / model.count_params()
    assert ratio < 1.11, ratio
    types = {tensor.Type() for tensor in tflite_tensors(path.read_bytes())}
    assert schema.TensorType.INT8 in types
    # the calibration held out: every step of new sequences, the state fed back each step
    report = verify_step(model, path, _sequences(2, 24), min_agreement=0.9)
    # random weights, near-tied decisions included: measured 96.9-97.3% of 1200 steps
    assert report.passed and report.quantized and report.argmax_agreement >= 0.9, str(report)


@pytest.mark.parametrize("cell", first_fast(["LSTM", "GRU", "SimpleRNN"]))
def test_int8_step_file_streams_in_tensorflow_lite_for_microcontrollers(tmp_path, cell):
    """The microcontroller interpreter (its reference int8 kernels, not LiteRT's XNNPACK ones)
    streams the file with LiteRT's decisions, the state fed back each step."""
    from tflite_micro.python.tflite_micro import runtime as micro

    from export.runtime import StepModel

    model = _tagger(0, cell)
    path = export_step(model, tmp_path / "m.step.int8.tflite", quantize="int8",
                       representative_data=_sequences(1, 16))
    interpreter = micro.Interpreter.from_bytes(path.read_bytes())
    inputs, outputs = _signature_order(path.read_bytes())
    step_model = StepModel(path)
    x = _sequences(2, 1)
    lite_state = micro_state = step_model.initial_state()
    lite_steps, micro_steps = [], []
    for t in range(STEPS):
        lite_out, lite_state = step_model.step(x[:, t], lite_state)
        feeds = dict(zip(step_model.state_names, micro_state), inputs=x[:, t])
        for index, name in enumerate(inputs):
            interpreter.set_input(feeds[name], index)
        interpreter.invoke()
        results = {name: interpreter.get_output(index) for index, name in enumerate(outputs)}
        micro_state = [results[f"next_{name}"] for name in step_model.state_names]
        lite_steps.append(lite_out)
        micro_steps.append(results["outputs"])
    lite, on_micro = np.concatenate(lite_steps), np.concatenate(micro_steps)
    # the two interpreters' int8 kernels round a few values one quantization step apart
    # (measured 0.008-0.046 apart after 20 steps of fed-back state); every decision was the
    # same (100% of 20 steps for each cell)
    agreement = float((lite.argmax(-1) == on_micro.argmax(-1)).mean())
    assert agreement >= 0.95, (agreement, float(np.abs(lite - on_micro).max()))


def _signature_order(content: bytes):
    """The signature names of the subgraph's inputs and outputs, in the subgraph's order (the
    microcontroller interpreter addresses them by position only)."""
    from ai_edge_litert import schema_py_generated as schema

    flat = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph, signature = flat.subgraphs[0], flat.signatureDefs[0]
    inputs = {entry.tensorIndex: entry.name.decode() for entry in signature.inputs}
    outputs = {entry.tensorIndex: entry.name.decode() for entry in signature.outputs}
    return [inputs[i] for i in graph.inputs], [outputs[i] for i in graph.outputs]


def test_verify_step_fails_an_int8_step_file_of_another_model(tmp_path):
    path = export_step(_tagger(5), tmp_path / "other.step.int8.tflite", quantize="int8",
                       representative_data=_sequences(1, 8))
    report = verify_step(_tagger(0), path, _sequences(2, 8), min_agreement=0.9)
    assert not report.passed and report.argmax_agreement < 0.5, str(report)


@pytest.mark.parametrize("variant", first_fast(["float16.onnx", "float16.tflite", "dynamic.onnx"]))
def test_float16_and_dynamic_step_files_keep_every_decision(tmp_path, variant):
    quantize, suffix = variant.split(".")
    model = _tagger(3)
    path = export_step(model, tmp_path / f"m.step.{quantize}.{suffix}", quantize=quantize)
    # float16: 2e-4-6e-4 from Keras on the medium models, no decision moved; dynamic ONNX (int8
    # LSTM weights): 97-99% of steps on random weights, so its bound is lower
    bound = 1.0 if quantize == "float16" else 0.9
    report = verify_step(model, path, _sequences(2, 16), min_agreement=bound)
    assert report.passed and report.quantized, str(report)


def test_quantized_step_files_refuse_what_they_cannot_write(tmp_path):
    model = _tagger(0, "GRU", units=8)
    with pytest.raises(ValueError, match="needs representative_data"):
        export_step(model, tmp_path / "m.step.tflite", quantize="int8")
    with pytest.raises(ValueError, match="Unknown quantize 'int8' for a .onnx step model"):
        export_step(model, tmp_path / "m.step.onnx", quantize="int8",
                    representative_data=_sequences(1, 4))
    bad = _sequences(1, 4)
    bad[1, 3, 0] = np.nan  # the calibrator would end the process on it
    with pytest.raises(ValueError, match="NaN or infinite"):
        export_step(model, tmp_path / "m.step.tflite", quantize="int8", representative_data=bad)
    with pytest.raises(ValueError, match="expected"):  # not sequences of the model's features
        export_step(model, tmp_path / "m.step.tflite", quantize="int8",
                    representative_data=np.zeros((4, STEPS, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_trained_lecture_model_streams_in_int8(tmp_path, long_sentence_results, cell):
    """The lecture's character model (trained), calibrated and verified on its own sentence
    windows through the command line's path."""
    from export.pipeline import export_and_verify

    result = long_sentence_results[cell]
    # trained on one sentence: measured 91.8% (LSTM) and 95.6% (GRU) of the 1700 steps' next
    # characters after the int8 state is fed back (per-channel scales: 92.4% and 95.5%)
    rows = export_and_verify(result["model"], tmp_path, "s", formats=["tflite"],
                             quantize=["int8"], inputs=result["x"], step=True,
                             min_agreement=0.85)
    assert [label for label, _ in rows] == ["s.step.int8"]
    report = rows[0][1]
    assert report.passed and report.argmax_agreement >= 0.85, str(report)
