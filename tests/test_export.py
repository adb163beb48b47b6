"""Export to TFLite and ONNX through one API, verified in the real runtimes (LiteRT, ONNX
Runtime): the model matrix, functional graphs, metadata, refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CELLS,
    INPUTS,
    SEQ_LEN,
    SHAPES,
    assert_outputs_close,
    first_fast,
    lecture_model,
)

from export import export_onnx, export_tflite, verify, vocabulary_metadata
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import load, operator_names
from export.tflite.flatbuffer import TFLiteConversionError
from keras_rnn import build_model
from keras_rnn.structure import UnsupportedModelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("inputs", first_fast(sorted(INPUTS)))  # (embedding_mask first)
@pytest.mark.parametrize("shape", [  # the fast tier keeps one layer; stacks in the full suite
    shape if shape == "single" else pytest.param(shape, marks=pytest.mark.slow)
    for shape in SHAPES])
@pytest.mark.parametrize("outputs", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("cell", CELLS)
def test_exports_pass_verify_in_both_runtimes(tmp_path, cell, outputs, shape, inputs):
    model = lecture_model(cell, outputs, shape, inputs)
    tflite = export_tflite(model, tmp_path / "m.tflite", batch_size=2, seq_len=SEQ_LEN)
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    for path, tolerance in ((tflite, TFLITE_TOLERANCE), (onnx_path, ONNX_TOLERANCE)):
        report = verify(model, path)
        assert report.passed, str(report)
        assert report.tolerance == tolerance and not report.quantized
        assert len(report.cases) >= 2  # several batches / lengths, never a single input
    # The ONNX graph holds the native recurrent operator and no generic Loop or Scan.
    import onnx

    op_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    native = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    # one operator per layer and direction (a backwards direction runs forwards over its
    # steps in reverse order: no runtime-specific direction="reverse")
    assert op_types.count(native) == (1 if shape == "single" else 2), op_types
    assert "Loop" not in op_types and "Scan" not in op_types
    assert not any(name.startswith("custom:") for name in operator_names(tflite.read_bytes()))


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_both_variants(tmp_path, reset_after):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((SEQ_LEN, 3)),
                              keras.layers.GRU(4, reset_after=reset_after, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(3, "softmax"))])
    onnx_path = export_onnx(model, tmp_path / "gru.onnx")
    import onnx

    gru = next(n for n in onnx.load(onnx_path).graph.node if n.op_type == "GRU")
    linear_before_reset = next(a.i for a in gru.attribute if a.name == "linear_before_reset")
    assert linear_before_reset == int(reset_after)
    assert verify(model, onnx_path).passed
    assert verify(model, export_tflite(model, tmp_path / "gru.tflite")).passed


def test_lecture_inputs_with_padding_in_the_middle_of_a_batch(tmp_path):
    """Masked steps behave as in Keras: rows of every length, ONNX with any batch/length."""
    model = lecture_model("lstm", "many_to_many", "bidirectional", "embedding_mask")
    x = np.array([[1, 2, 3, 4, 5, 1, 2, 3, 4], [3, 3, 0, 0, 0, 0, 0, 0, 0],
                  [5, 4, 3, 2, 1, 0, 0, 0, 0]], np.int32)
    onnx_model = load(export_onnx(model, tmp_path / "m.onnx"))
    assert_outputs_close("onnx padded batch", onnx_model.run(x), np.asarray(model(x)),
                         ONNX_TOLERANCE)
    assert_outputs_close("onnx short batch", onnx_model.run(x[1:, :4]), np.asarray(model(x[1:, :4])),
                         ONNX_TOLERANCE)
    tflite_model = load(export_tflite(model, tmp_path / "m.tflite", batch_size=3, seq_len=9))
    assert_outputs_close("tflite padded batch", tflite_model.run(x), np.asarray(model(x)),
                         TFLITE_TOLERANCE)


@pytest.mark.slow
def test_functional_models_export_including_branches_and_merges(tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    hidden = keras.layers.Embedding(9, 4, mask_zero=True)(ids)
    hidden = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(hidden)
    probabilities = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.1)(hidden))
    model = keras.Model(ids, probabilities)
    assert verify(model, export_onnx(model, tmp_path / "f.onnx")).passed
    assert verify(model, export_tflite(model, tmp_path / "f.tflite", seq_len=7)).passed

    inputs = keras.Input((6, 3))
    branch_a = keras.layers.LSTM(4)(inputs)
    branch_b = keras.layers.GRU(4)(inputs)
    merged = keras.Model(inputs, keras.layers.Add()([branch_a, branch_b]))
    onnx_path = export_onnx(merged, tmp_path / "merged.onnx")
    assert verify(merged, onnx_path).passed
    assert verify(merged, export_tflite(merged, tmp_path / "merged.tflite")).passed
    import onnx

    op_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    assert op_types.count("LSTM") == 1 and op_types.count("GRU") == 1, op_types
    assert "Loop" not in op_types and "Scan" not in op_types


@pytest.mark.parametrize("cell", ["simple_rnn", "gru"])
def test_a_bare_tensor_initial_state_exports_like_a_list(tmp_path, cell):
    """`initial_state=h0` (one tensor, which Keras takes for a one-state layer) was refused
    with "Using a symbolic tf.Tensor as a Python bool" in both formats (issue 16)."""
    import keras

    keras.utils.set_random_seed(2)
    layer = {"simple_rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU}[cell]
    sequence = keras.Input((5, 3), name="sequence")
    start = keras.Input((4,), name="start")
    outputs = layer(4, return_sequences=True, bias_initializer="uniform")(sequence,
                                                                          initial_state=start)
    model = keras.Model([sequence, start], outputs)
    rng = np.random.default_rng(1)
    feeds = {"sequence": rng.normal(size=(2, 5, 3)).astype(np.float32),
             "start": rng.normal(size=(2, 4)).astype(np.float32)}
    expected = np.asarray(model([feeds["sequence"], feeds["start"]]))
    for path, tolerance in ((export_tflite(model, tmp_path / "m.tflite", batch_size=2),
                             TFLITE_TOLERANCE),
                            (export_onnx(model, tmp_path / "m.onnx"), ONNX_TOLERANCE)):
        actual = load(path).run_named(feeds)[load(path).output_names[0]]
        assert_outputs_close(path.suffix, actual, expected, tolerance)  # the start state used


def test_a_server_batch_writes_simple_rnn_layers_in_the_loop_form(tmp_path):
    """`export_onnx(batch_size=64)`: SimpleRNN layers in tf2onnx's Loop (ONNX Runtime's faster
    form from batch 16 on), masks and all, the GRU still native; batch 1 keeps the native RNN."""
    import keras

    from export.runtime import FORMS_METADATA, RUNTIMES_METADATA

    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, 5))
    x = keras.layers.Masking()(inputs)
    x = keras.layers.SimpleRNN(8, bias_initializer="uniform", return_sequences=True,
                               name="simple_rnn")(x)
    x = keras.layers.GRU(7, return_sequences=True, name="gru")(x)
    x = keras.layers.Bidirectional(keras.layers.SimpleRNN(6, bias_initializer="uniform"),
                                   name="bi")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    server = export_onnx(model, tmp_path / "server.onnx", batch_size=64)
    small = export_onnx(model, tmp_path / "small.onnx", batch_size=1)
    assert json.loads(load(server).metadata[FORMS_METADATA]) == {
        "simple_rnn": "Loop", "gru": "native operator", "bi": "Loop"}
    assert json.loads(load(server).metadata[RUNTIMES_METADATA]) == ["onnxruntime"]
    import onnx

    def operators(path):
        return {node.op_type for node in onnx.load(path).graph.node}

    assert {"Loop", "GRU"} <= operators(server) and "RNN" not in operators(server)
    assert {"RNN", "GRU"} <= operators(small) and "Loop" not in operators(small)
    x = np.random.default_rng(0).normal(size=(64, 9, 5)).astype(np.float32)
    x[:16, 6:] = 0  # padding at the end,
    x[16:32, :2] = 0  # at the start,
    x[32:48, 3:5] = 0  # in the middle of rows
    for path in (server, small):
        report = verify(model, path, x)
        assert report.passed, str(report)
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(model, tmp_path / "bad.onnx", batch_size=0)


def test_export_does_not_change_the_model(tmp_path):
    model = lecture_model("gru", "many_to_one", "stacked", "one_hot")
    x = np.random.default_rng(0).normal(size=(2, SEQ_LEN, 6)).astype(np.float32)
    before = np.asarray(model(x))
    weights = [w.copy() for w in model.get_weights()]
    export_tflite(model, tmp_path / "m.tflite", seq_len=SEQ_LEN, quantize="int8",
                  representative_data=x)
    export_onnx(model, tmp_path / "m.onnx")
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)


# -- metadata ---------------------------------------------------------------------------------

def test_vocabulary_travels_with_both_formats(tmp_path, hihello_results):
    result = hihello_results["gru"]
    metadata = vocabulary_metadata(result["vocabulary"], task="hihello")
    for path in (export_tflite(result["model"], tmp_path / "h.tflite", metadata=metadata),
                 export_onnx(result["model"], tmp_path / "h.onnx", metadata=metadata)):
        stored = load(path).metadata
        assert stored["task"] == "hihello"
        assert json.loads(stored["vocabulary"])["symbols"] == list(result["vocabulary"].symbols)


# -- failure modes ----------------------------------------------------------------------------

def test_unsupported_layer_names_it_and_writes_nothing(tmp_path):
    import keras
    import tensorflow as tf

    # Python code inside the graph has no TFLite builtin and no ONNX form
    python = keras.layers.Lambda(
        lambda x: tf.numpy_function(lambda v: v * 2, [x], tf.float32, stateful=False),
        output_shape=(5, 3), name="my_python")
    model = keras.Sequential([keras.Input((5, 3)), python, keras.layers.LSTM(3)])
    with pytest.raises(TFLiteConversionError, match="PyFunc.* builtin ops only"):
        export_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(UnsupportedModelError, match="no ONNX form: PyFunc"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_path, message", [
    ("missing_dir/m.onnx", "does not exist"),
    ("m.txt", "should end in '.onnx'"),
])
def test_bad_output_paths(tmp_path, bad_path, message):
    model = build_model(cell="gru", input_size=3, hidden_size=2, seq_len=4)
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / bad_path)
