"""`verify` must catch wrong files, and masks must be exact wherever the padding sits.

Negative controls: deliberately broken files (gate weights swapped, a bias shifted, padding
ignored, int8 calibrated on garbage, NaN where Keras has numbers) must FAIL, and the command
line must exit 1 on them. Positive checks compare the runtimes' outputs with Keras directly,
not through `verify`, so a `verify` that always passed could not hide a wrong file.
"""

import numpy as np
import pytest
from helpers import CELLS, ONNX_RUNTIMES, assert_outputs_close, first_fast

from export import export_onnx, export_tflite, verify
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.parity.verifier import compare
from export.runtime import load

BATCH, STEPS = 6, 9


def _layer_class(cell):
    import keras

    return {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
            "gru": keras.layers.GRU}[cell]


def _masked_model(cell, source, *, masked=True):
    """mask -> RNN(return_sequences) -> Bidirectional(RNN) -> Dense; `masked=False` is the same
    network with the same weights and no mask (a file that ignores the padding)."""
    import keras

    keras.utils.set_random_seed(3)
    rnn = _layer_class(cell)
    if source == "embedding":
        inputs = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(8, 4, mask_zero=masked)(inputs)
    else:
        inputs = keras.Input((None, 3))
        x = keras.layers.Masking(0.0)(inputs) if masked else inputs
    # nonzero biases: with zero biases and zero padded inputs, a runtime that ran the padding
    # through the cell would keep a zero state there and look right
    x = rnn(5, return_sequences=True, bias_initializer="uniform")(x)
    x = keras.layers.Bidirectional(rnn(4, bias_initializer="uniform"))(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _padded_batch(source, seed=0):
    """Rows padded at the start, at the end, in the middle, all steps, none, and mixed."""
    rng = np.random.default_rng(seed)
    valid = np.ones((BATCH, STEPS), bool)
    valid[0, :4] = False  # pre-padding, keras.utils.pad_sequences' default
    valid[1, 5:] = False  # post-padding
    valid[2, [2, 3, 6]] = False  # steps masked in the middle (keras gru_test::test_masking)
    valid[3, :] = False  # nothing but padding
    valid[5, [0, 4, 8]] = False  # a mix of all three
    if source == "embedding":
        x = rng.integers(1, 8, (BATCH, STEPS)).astype(np.int32)
    else:
        x = rng.normal(size=(BATCH, STEPS, 3)).astype(np.float32)
    x[~valid] = 0
    return x


@pytest.mark.parametrize("source", first_fast(["embedding", "masking"]))
@pytest.mark.parametrize("cell", first_fast(("gru", "lstm", "simple_rnn")))
def test_padding_anywhere_in_a_row_matches_keras_in_both_runtimes(tmp_path, cell, source):
    model = _masked_model(cell, source)
    x = _padded_batch(source)
    expected = np.asarray(model(x))
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    tflite_path = export_tflite(model, tmp_path / "m.tflite", batch_size=BATCH, seq_len=STEPS)
    for runtime in ONNX_RUNTIMES:
        assert_outputs_close(runtime, load(onnx_path, runtime=runtime).run(x), expected,
                             ONNX_TOLERANCE)
    assert_outputs_close("tflite", load(tflite_path).run(x), expected, TFLITE_TOLERANCE)
    for path in (onnx_path, tflite_path):
        assert verify(model, path, x, runtimes=None if path == tflite_path
                      else ONNX_RUNTIMES).passed


@pytest.mark.parametrize("options", [dict(go_backwards=True), dict(zero_output_for_mask=True),
                                     dict(go_backwards=True, zero_output_for_mask=True)])
def test_backwards_and_zero_output_layers_on_padding_in_onnx(tmp_path, options):
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(8, 4, mask_zero=True),
                              keras.layers.GRU(5, return_sequences=True,
                                               bias_initializer="uniform", **options),
                              keras.layers.Dense(2)])
    x = _padded_batch("embedding")
    path = export_onnx(model, tmp_path / "m.onnx")
    for runtime in ONNX_RUNTIMES:
        assert_outputs_close(runtime, load(path, runtime=runtime).run(x), np.asarray(model(x)),
                             ONNX_TOLERANCE)


def test_verify_fails_a_file_that_relies_on_one_runtimes_reading_of_sequence_lens():
    """Negative control: the masked go_backwards file the exporter wrote before (commit
    9f999a1: `direction="reverse"` with `sequence_lens`) gives Keras's answer in ONNX Runtime
    only; the reference evaluator runs every step backwards from the padding."""
    from pathlib import Path

    import keras

    data = Path(__file__).parent / "data"
    model = keras.saving.load_model(data / "masked_go_backwards.keras")
    old_file = data / "masked_go_backwards.sequence_lens.onnx"
    assert verify(model, old_file, runtimes=["onnxruntime"]).passed
    report = verify(model, old_file)  # ONNX Runtime and the reference evaluator, by default
    assert not report.passed, str(report)
    assert report.runtimes["onnxruntime"] <= ONNX_TOLERANCE < report.runtimes["reference"]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_verify_fails_a_file_that_ignores_the_padding(tmp_path, fmt):
    masked = _masked_model("gru", "embedding")
    unmasked = _masked_model("gru", "embedding", masked=False)
    unmasked.set_weights(masked.get_weights())
    x = _padded_batch("embedding")
    no_padding = x[4:5]  # the row without padding: both models agree there
    np.testing.assert_allclose(masked(no_padding), unmasked(no_padding), atol=1e-6)
    if fmt == "onnx":
        path = export_onnx(unmasked, tmp_path / "m.onnx")
    else:
        path = export_tflite(unmasked, tmp_path / "m.tflite", batch_size=2, seq_len=STEPS)
    report = verify(masked, path)  # its own inputs: pre-, post- and mid-row padding
    assert not report.passed, str(report)
    assert report.max_abs_diff > 1e-3


def _swap_first_two_gates(weights, units):
    """ONNX W/R of shape (directions, gates * units, inputs): the first two gate blocks
    exchanged, the kind of slip a hand-written layout conversion makes."""
    swapped = weights.copy()
    swapped[:, :units], swapped[:, units:2 * units] = weights[:, units:2 * units], weights[:, :units]
    return swapped


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_verify_fails_an_onnx_file_with_swapped_gates(tmp_path, cell):
    import keras
    import onnx
    from onnx import numpy_helper

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((None, 3)), _layer_class(cell)(4), keras.layers.Dense(2)])
    path = export_onnx(model, tmp_path / "m.onnx")
    assert verify(model, path).passed
    proto = onnx.load(path)
    operator = next(node for node in proto.graph.node if node.op_type in ("LSTM", "GRU"))
    weights = next(i for i in proto.graph.initializer if i.name == operator.input[1])  # W
    broken = _swap_first_two_gates(numpy_helper.to_array(weights), 4)
    weights.CopyFrom(numpy_helper.from_array(broken, weights.name))
    onnx.save(proto, path)
    report = verify(model, path)
    assert not report.passed, str(report)
    assert report.max_abs_diff > ONNX_TOLERANCE


def test_verify_fails_a_tflite_file_with_a_shifted_bias(tmp_path, monkeypatch):
    import keras

    import export.tflite.forms

    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((STEPS, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    original = export.tflite.forms.input_bias
    monkeypatch.setattr(export.tflite.forms, "input_bias", lambda layer: original(layer) + 0.1)
    report = verify(model, export_tflite(model, tmp_path / "m.tflite"))
    assert not report.passed, str(report)
    assert report.max_abs_diff > TFLITE_TOLERANCE


def test_command_line_exits_1_and_keeps_no_file_when_verification_fails(tmp_path, monkeypatch,
                                                                         capsys):
    import keras

    import export.onnx.operators
    from export.__main__ import main

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    original = export.onnx.operators.onnx_weights

    def swapped(layer):
        W, R, B = original(layer)
        return _swap_first_two_gates(W[None], layer.units)[0], R, B

    monkeypatch.setattr(export.onnx.operators, "onnx_weights", swapped)
    out = tmp_path / "out"
    code = main([str(tmp_path / "m.keras"), "--to", "onnx", "--out", str(out), "--verify"])
    printed = capsys.readouterr()
    assert code == 1, printed
    assert "FAIL" in printed.out
    assert not list(out.glob("*.onnx")), "a file that failed verification was left behind"


# -- NaN and inf ----------------------------------------------------------------------------------

def test_compare_treats_nan_as_a_mismatch_unless_both_are_nan():
    assert compare([1.0, np.nan], [1.0, np.nan]) == (0.0, 0)
    assert compare([1.0, 2.0], [1.0, np.nan]) == (float("inf"), 1)
    assert compare([np.inf, 0.5], [np.inf, 0.25]) == (0.25, 0)
    assert compare([np.inf], [-np.inf]) == (float("inf"), 1)


def test_verify_fails_where_keras_has_nan_and_the_file_does_not(tmp_path):
    import keras

    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, return_sequences=True),
                              keras.layers.Dense(3)])
    kernel = model.layers[0].cell.kernel
    broken = kernel.numpy()
    broken[0, 0] = np.inf
    kernel.assign(broken)
    path = export_onnx(model, tmp_path / "m.onnx")  # the same weights, inf included
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    x[:, 2, 0] = 0.0  # 0 * inf: Keras carries the NaN on; ONNX Runtime's kernels clip it away
    assert np.isnan(np.asarray(model(x))).any()
    report = verify(model, path, x)
    assert not report.passed and report.nonfinite_mismatches > 0, str(report)


@pytest.mark.parametrize("cell", first_fast(CELLS))
def test_nan_inputs_give_nan_where_keras_gives_nan(tmp_path, cell):
    model = _masked_model(cell, "masking")
    x = _padded_batch("masking")
    x[0, 5, 1] = np.nan  # after pre-padding
    x[2, 8, 0] = np.nan  # the last step
    x[4, 0, 2] = np.nan  # the first step
    expected = np.asarray(model(x))
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    for path in (export_onnx(model, tmp_path / "m.onnx"),
                 export_tflite(model, tmp_path / "m.tflite", batch_size=BATCH, seq_len=STEPS)):
        difference, mismatches = compare(load(path).run(x), expected)
        assert mismatches == 0 and difference < TFLITE_TOLERANCE, (path.suffix, difference)


# -- quantized files ------------------------------------------------------------------------------

def test_int8_calibrated_on_garbage_fails_on_held_out_inputs(tmp_path, hihello_results):
    result = hihello_results["lstm"]
    model, x = result["model"], result["x"]
    good = export_tflite(model, tmp_path / "good.tflite", quantize="int8", representative_data=x)
    report = verify(model, good, x)
    assert report.passed and report.held_out_agreement is not None, str(report)
    garbage = export_tflite(model, tmp_path / "bad.tflite", quantize="int8",
                            representative_data=x * 1e30)
    report = verify(model, garbage, x * 1e30)  # what `--calibration` then verifies on
    assert not report.passed, str(report)
    assert report.held_out_agreement < 0.5


@pytest.mark.parametrize("bad, message", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 3, np.inf, x), "NaN or infinite"),
    (lambda x: x[:0], "no rows"),
    (lambda x: x[0], "expected \\(n, 6, 5\\)"),
    (lambda x: x.astype(str), "expected numbers"),
])
def test_int8_refuses_bad_calibration_data_before_converting(tmp_path, hihello_results, bad,
                                                            message):
    result = hihello_results["gru"]
    with pytest.raises(ValueError, match=message):
        export_tflite(result["model"], tmp_path / "m.tflite", quantize="int8",
                      representative_data=bad(result["x"]))
    assert not list(tmp_path.iterdir())


ACTIVATIONS = ("tanh", "relu", "linear", "sigmoid", "hard_sigmoid", "softsign", "softplus", "elu")


@pytest.mark.parametrize(("cell", "activation", "slot"), [
    (cell, activation, slot) for cell in CELLS for activation in ACTIVATIONS
    for slot in ("activation", "recurrent_activation")
    if cell != "simple_rnn" or slot == "activation"])  # (SimpleRNN has one activation)
def test_an_onnx_file_claims_exactly_the_runtimes_that_run_its_activations(tmp_path, cell,
                                                                           activation, slot):
    """Each ONNX runtime the file claims (its `onnx_runtimes` metadata) gives Keras's answer;
    each one it leaves out refuses the file or gives another answer (the reference evaluator
    runs LSTM/GRU with their default activations whatever the file says)."""
    import keras
    from helpers import runtimes_for

    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, 3))
    layer = _layer_class(cell)(4, bias_initializer="uniform", **{slot: activation})
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    expected = np.asarray(model(x))
    path = export_onnx(model, tmp_path / "m.onnx")
    claimed = runtimes_for(path)
    assert claimed[0] == "onnxruntime"
    for runtime in ONNX_RUNTIMES:
        try:
            actual = load(path, runtime=runtime).run(x)
        except ValueError:  # refused (ModelFileError is a ValueError)
            assert runtime not in claimed, f"{runtime} refused a file that claims it"
            continue
        difference = float(np.max(np.abs(actual - expected)))
        if runtime in claimed:
            assert_outputs_close(runtime, actual, expected, ONNX_TOLERANCE)
        else:
            assert difference > 1e-3, f"{runtime} runs the file right ({difference:.2g}) " \
                                      "but the file does not claim it"


def test_two_recurrent_layers_over_one_input_do_not_claim_openvino(tmp_path):
    """OpenVINO 2026.4 gives one of two recurrent operators reading the same input wrong
    outputs when the time length is fixed: such a file leaves it out, and still gives Keras's
    answer in the runtimes it claims."""
    import keras
    from helpers import runtimes_for

    keras.utils.set_random_seed(1)
    inputs = keras.Input((7, 4))
    layers = [keras.layers.GRU(3, return_sequences=True) for _ in range(2)]
    model = keras.Model(inputs, keras.layers.Add()([layer(inputs) for layer in layers]))
    x = np.random.default_rng(0).normal(size=(2, 7, 4)).astype(np.float32)
    expected = np.asarray(model(x))
    path = export_onnx(model, tmp_path / "m.onnx")
    assert runtimes_for(path) == ("onnxruntime", "reference")
    for runtime in runtimes_for(path):
        assert_outputs_close(runtime, load(path, runtime=runtime).run(x), expected, ONNX_TOLERANCE)
    wrong = float(np.max(np.abs(load(path, runtime="openvino").run(x) - expected)))
    assert wrong > 1e-3, f"OpenVINO runs it right now ({wrong:.2g}): claim it again"
