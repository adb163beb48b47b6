"""`stateful=True` models: the exported file continues each call from the state the previous
call left, as Keras does, and starts again from zeros on reset.

A .tflite file keeps the state in resource variables (builtin READ_VARIABLE/ASSIGN_VARIABLE)
and has a "reset" signature; an .onnx file takes it as inputs `state_N` and returns
`next_state_N`. The checks below run the raw runtimes (LiteRT signature runners, an ONNX
Runtime session fed the state by hand), not only `export.runtime`.
"""

import json

import numpy as np
import pytest
from helpers import ONNX_RUNTIMES, assert_outputs_close, runtimes_for

from export import export_onnx, export_tflite, verify
from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import RESET_SIGNATURE, STATEFUL_METADATA, load

BATCH, STEPS, FEATURES = 2, 6, 3
CALLS = 3  # consecutive calls compared: a frozen or forgotten state differs from the second


def _stateful_model(stateful=True):
    """Masked steps, a stateful GRU over a stateful bidirectional LSTM: the shape of Keras's
    own stateful RNN tests (keras/src/layers/rnn/*_test.py `test_statefulness`) and of the
    Keras 2 example `lstm_stateful.py` (a fixed batch, the state carried across batches)."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input(batch_shape=(BATCH, STEPS, FEATURES), name="inputs")
    x = keras.layers.Masking(0.0)(inputs)
    # (nonzero biases: a file that ran the padding through the cell would change the state)
    x = keras.layers.GRU(5, stateful=stateful, return_sequences=True, name="gru",
                         bias_initializer="uniform")(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(4, stateful=stateful,
                                                     bias_initializer="uniform"), name="bilstm")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _calls(seed=0):
    rng = np.random.default_rng(seed)
    calls = rng.normal(size=(CALLS, BATCH, STEPS, FEATURES)).astype(np.float32)
    calls[0, 0, :2] = 0.0  # padding at the start of a row, then in the middle of one
    calls[1, 1, 3] = 0.0
    return calls


def _keras_calls(model, calls):
    """Keras's outputs for consecutive calls from a reset state."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
    return [np.asarray(model(batch, training=False)) for batch in calls]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _stateful_model()
    directory = tmp_path_factory.mktemp("stateful")
    model(_calls(9)[0])  # leave a state behind: the files must start from a reset one
    kept = [np.array(v.numpy()) for v in model.get_layer("gru").states]
    paths = {"tflite": export_tflite(model, directory / "m.tflite"),
             "onnx": export_onnx(model, directory / "m.onnx")}
    return model, paths, kept


def test_export_leaves_the_models_state_alone(exported):
    model, _, kept = exported
    for before, variable in zip(kept, model.get_layer("gru").states):
        np.testing.assert_array_equal(before, variable.numpy())


def test_litert_carries_the_state_between_invokes_and_resets_it(exported):
    from ai_edge_litert.interpreter import Interpreter

    model, paths, _ = exported
    calls = _calls()
    expected = _keras_calls(model, calls)
    interpreter = Interpreter(model_path=str(paths["tflite"]))
    signatures = interpreter.get_signature_list()
    assert RESET_SIGNATURE in signatures and len(signatures) == 2, signatures
    serve = interpreter.get_signature_runner(
        next(key for key in signatures if key != RESET_SIGNATURE))
    for index, batch in enumerate(calls):
        # float32 sums in another order: see TFLITE_TOLERANCE
        assert_outputs_close(f"call {index}", serve(inputs=batch)["outputs"], expected[index],
                             TFLITE_TOLERANCE)
    reset = interpreter.get_signature_runner(RESET_SIGNATURE)
    reset(**{name: np.zeros(detail["shape"], np.float32)  # zeros: a reset state
             for name, detail in reset.get_input_details().items()})
    assert_outputs_close("first call after reset", serve(inputs=calls[0])["outputs"],
                         expected[0], TFLITE_TOLERANCE)
    # without the reset, the same input continues the sequence: a different answer
    assert np.abs(serve(inputs=calls[0])["outputs"] - expected[0]).max() > 100 * TFLITE_TOLERANCE


def test_onnx_takes_and_returns_the_state(exported):
    import onnxruntime

    model, paths, _ = exported
    calls = _calls()
    expected = _keras_calls(model, calls)
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    layout = json.loads(session.get_modelmeta().custom_metadata_map[STATEFUL_METADATA])
    # GRU h, then each direction's LSTM h and c
    assert [label for label, _ in layout] == ["gru/h", "bilstm/forward/h", "bilstm/forward/c",
                                              "bilstm/backward/h", "bilstm/backward/c"]
    state = {f"state_{i}": np.zeros((BATCH, units), np.float32)
             for i, (_, units) in enumerate(layout)}
    names = ["outputs"] + [f"next_state_{i}" for i in range(len(layout))]
    for index, batch in enumerate(calls):
        outputs, *next_state = session.run(names, {"inputs": batch, **state})
        # ONNX Runtime's kernels sum in another order: see ONNX_TOLERANCE
        assert_outputs_close(f"call {index}", outputs, expected[index], ONNX_TOLERANCE)
        state = {f"state_{i}": value for i, value in enumerate(next_state)}
    # the GRU's final state is Keras's, after the three calls
    gru_state = model.get_layer("gru").states[0].numpy()
    assert_outputs_close("gru state", state["state_0"], gru_state, ONNX_TOLERANCE)


@pytest.mark.parametrize("file_format", ["tflite", "onnx"])
def test_runtime_and_verify_on_stateful_files(exported, file_format):
    model, paths, _ = exported
    calls = _calls(1)
    expected = _keras_calls(model, calls)
    tolerance = TFLITE_TOLERANCE if file_format == "tflite" else ONNX_TOLERANCE
    for name in runtimes_for(paths[file_format]):
        runtime = load(paths[file_format], runtime=name)
        assert runtime.stateful
        runtime.reset_states()
        for index, batch in enumerate(calls):
            assert_outputs_close(f"{name} call {index}", runtime.run(batch), expected[index],
                                 tolerance)
        runtime.reset_states()
        assert_outputs_close(f"{name} after reset", runtime.run(calls[0]), expected[0],
                             tolerance)
    report = verify(model, paths[file_format], calls.reshape(-1, STEPS, FEATURES),
                    runtimes=None if file_format == "tflite" else ONNX_RUNTIMES)
    assert report.passed, str(report)
    assert len(report.cases) >= 2 * CALLS  # consecutive calls, given and held out


@pytest.mark.slow
def test_verify_fails_a_file_whose_state_is_frozen(exported, tmp_path):
    """The same weights without stateful=True: what a converter that freezes the state writes
    (each call from zeros). Right on the first call, wrong from the second: FAIL."""
    model, _, _ = exported
    stateless = _stateful_model(stateful=False)
    stateless.set_weights(model.get_weights())
    calls = _calls(2).reshape(-1, STEPS, FEATURES)
    for path in (export_tflite(stateless, tmp_path / "frozen.tflite", batch_size=BATCH),
                 export_onnx(stateless, tmp_path / "frozen.onnx")):
        report = verify(model, path, calls)
        assert not report.passed and report.max_abs_diff > 1e-3, str(report)
    # and the other way round: a stateless model against a file that carries a state
    for path in exported[1].values():
        with pytest.raises(ValueError, match="carries a state from call to call, but the model"):
            verify(stateless, path, calls)


def test_stateful_refusals(exported, tmp_path):
    import keras

    model, paths, _ = exported
    with pytest.raises(ValueError, match="keep a state for batches of 2"):
        export_tflite(model, tmp_path / "m.tflite", batch_size=1)
    with pytest.raises(ValueError, match="form='fused' cannot keep the state"):
        export_tflite(model, tmp_path / "m.tflite", form="fused")
    onnx_model = load(paths["onnx"])
    onnx_model.reset_states()
    onnx_model.run(_calls()[0])
    with pytest.raises(ValueError, match="carries the state of 2 rows; got a batch of 1"):
        onnx_model.run(_calls()[0][:1])

    class Cell(keras.layers.Layer):  # a custom cell: its state cannot become ONNX inputs
        state_size = 2

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, inputs, states):
            output = keras.ops.matmul(inputs, self.kernel) + states[0]
            return output, [output]

    custom = keras.Sequential([keras.Input(batch_shape=(2, 4, 3)),
                               keras.layers.RNN(Cell(), stateful=True, name="custom")])
    with pytest.raises(ValueError, match=r"\['custom'\] are stateful=True but not"):
        export_onnx(custom, tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_while_form_keeps_the_state_too(tmp_path):
    """The converter's WHILE loop over Keras's own stateful layer (no stand-in)."""
    model = _stateful_model()
    path = export_tflite(model, tmp_path / "m.tflite", form="while")
    report = verify(model, path, _calls(4).reshape(-1, STEPS, FEATURES))
    assert report.passed and report.forms == {"gru": "WHILE loop", "bilstm": "WHILE loop"}, \
        str(report)


@pytest.mark.slow
def test_stateful_layers_with_return_state_and_a_given_initial_state(tmp_path):
    """A stateful encoder returning its states into a stateful decoder called with
    initial_state=: Keras starts the decoder from the given state on every call (its kept
    state unused) and keeps both layers' final states; the files must do the same."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input(batch_shape=(BATCH, STEPS, FEATURES), name="inputs")
    sequence, h, c = keras.layers.LSTM(4, stateful=True, return_sequences=True,
                                       return_state=True, name="encoder")(inputs)
    decoded = keras.layers.LSTM(4, stateful=True, name="decoder")(sequence, initial_state=[h, c])
    model = keras.Model(inputs, [keras.layers.Dense(2, name="head")(decoded), h])
    calls = _calls(6).reshape(-1, STEPS, FEATURES)
    for path in (export_tflite(model, tmp_path / "m.tflite"), export_onnx(model, tmp_path / "m.onnx")):
        report = verify(model, path, calls, runtimes=None if path.suffix == ".tflite"
                        else ONNX_RUNTIMES)
        assert report.passed, str(report)
