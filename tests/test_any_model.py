"""Models the native forms did not take, exported as the anchors export them (issue 16): every
file is run in each runtime it claims and compared with the Keras model itself.

- a recurrent activation without a native form, `merge_mode=None`: the converter's own form
  for that layer, named in the file's `recurrent_forms`;
- softsign, softplus and elu: native in both formats;
- a recurrent layer called twice (one call masked, one not): one operator per call;
- dropout and recurrent dropout in the WHILE form and inside TimeDistributed;
- a subclassed model called on data: its recurrent layers native;
- string inputs read by a StringLookup (TFLite keeps the table);
- half precision (mixed_float16, float16, mixed_bfloat16): files computing in float32, judged
  within the half type's bound, and a wrong file still failing it;
- uint8, int64 and float16 inputs.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_outputs_close, first_fast, runtimes_for

from export import export_onnx, export_tflite, verify
from export.parity.tolerances import HALF_PRECISION_TOLERANCE, ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.runtime import FORMS_METADATA, StepModel, load

FORMATS = ("tflite", "onnx")
# the fast tier runs each concern in one format (ONNX: the converter's Loop, the operators'
# splice, the runtime claims), the full suite in both
BOTH_FORMATS = first_fast(("onnx", "tflite"))
TOLERANCE = {"tflite": TFLITE_TOLERANCE, "onnx": ONNX_TOLERANCE}


def _export(model, path, batch: int):
    """An export to `path`'s format; a .tflite file for `batch` rows (its batch is fixed)."""
    if str(path).endswith(".tflite"):
        return export_tflite(model, path, batch_size=batch)
    return export_onnx(model, path)


def _outputs_everywhere(path, feeds: dict) -> dict:
    """{runtime: {output name: array}} in every runtime the file claims."""
    results = {}
    for runtime in runtimes_for(path):
        loaded = load(path) if runtime == "litert" else load(path, runtime=runtime)
        results[runtime] = loaded.run_named(feeds)
    return results


def _assert_matches_keras(model, path, x, tolerance):
    """The file's outputs equal the model's, by output name, in every runtime it claims."""
    expected = model(x, training=False)
    if isinstance(expected, (list, tuple)):  # the model's output names, numbered if repeated
        names = list(model.output_names)
        if len(set(names)) < len(names):
            names = [f"output_{index}" for index in range(len(names))]
    else:
        names, expected = ["outputs"], [expected]
    feeds = {"inputs": x} if not isinstance(x, dict) else x
    for runtime, outputs in _outputs_everywhere(path, feeds).items():
        assert sorted(outputs) == sorted(names), (runtime, sorted(outputs), names)
        for name, value in zip(names, expected):
            assert_outputs_close(f"{runtime} {name}", outputs[name], np.asarray(value), tolerance)


def _forms(path) -> dict:
    return json.loads(load(path).metadata[FORMS_METADATA])


def _sequences(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("fmt", BOTH_FORMATS)
def test_an_activation_without_a_native_form_gets_the_converters_form(tmp_path, fmt):
    """A GRU with `activation="silu"`: the TFLite converter's WHILE loop and tf2onnx's Loop for
    that layer alone (the LSTM after it stays native), named so in the file; both layers'
    outputs are the model's, by name (the converter writes no signature for such a graph:
    the exporter writes it)."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 4))
    hidden = keras.layers.GRU(5, activation="silu", return_sequences=True,
                              bias_initializer="uniform", name="silu_gru")(inputs)
    last = keras.layers.LSTM(3, name="plain_lstm")(hidden)
    model = keras.Model(inputs, [hidden, last])
    path = _export(model, tmp_path / f"m.{fmt}", 3)
    forms = _forms(path)
    assert forms["silu_gru"] in ("converter loop", "Loop"), forms
    assert forms["plain_lstm"] in ("unrolled", "native operator"), forms
    _assert_matches_keras(model, path, _sequences((3, 6, 4)), TOLERANCE[fmt])


@pytest.mark.parametrize("fmt", BOTH_FORMATS)
@pytest.mark.parametrize("activation", first_fast(("softsign", "softplus", "elu")))
def test_softsign_softplus_and_elu_are_native(tmp_path, fmt, activation):
    """In every cell slot: the activation and, for LSTM, the recurrent activation too; inputs
    large enough to reach elu's and softplus's curved parts on both sides."""
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((7, 3))
    x = keras.layers.SimpleRNN(4, activation=activation, return_sequences=True,
                               bias_initializer="uniform")(inputs)
    x = keras.layers.GRU(4, activation=activation, return_sequences=True,
                         bias_initializer="uniform")(x)
    x = keras.layers.LSTM(3, activation=activation, recurrent_activation=activation,
                          bias_initializer="uniform")(x)
    model = keras.Model(inputs, x)
    path = _export(model, tmp_path / f"m.{fmt}", 2)
    assert set(_forms(path).values()) == {"unrolled" if fmt == "tflite" else "native operator"}
    _assert_matches_keras(model, path, 3 * _sequences((2, 7, 3)), TOLERANCE[fmt])


@pytest.mark.parametrize("fmt", BOTH_FORMATS)
@pytest.mark.parametrize("return_state", first_fast([True, False]))
def test_bidirectional_merge_mode_none_returns_both_directions_natively(tmp_path, fmt,
                                                                        return_state):
    """Each direction's outputs (and with return_state, its states), over masked ids: the
    native form, an LSTM forwards and, without states, a GRU backwards (`backward_layer`;
    Keras itself counts a mixed pair's states as twice the forward layer's)."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True)(inputs)
    results = keras.layers.Bidirectional(
        keras.layers.LSTM(3, return_sequences=True, return_state=return_state,
                          bias_initializer="uniform"),
        backward_layer=(keras.layers.LSTM if return_state else keras.layers.GRU)(
            3, return_sequences=True, return_state=return_state, go_backwards=True,
            bias_initializer="uniform"),
        merge_mode=None, name="both")(x)
    model = keras.Model(inputs, list(results))
    path = _export(model, tmp_path / f"m.{fmt}", 2)
    assert _forms(path) == {"both": "unrolled" if fmt == "tflite" else "native operator"}
    ids = np.array([[3, 4, 5, 0, 0, 0], [0, 7, 0, 8, 9, 1]], np.int32)
    _assert_matches_keras(model, path, ids, TOLERANCE[fmt])


@pytest.mark.parametrize("fmt", BOTH_FORMATS)
def test_a_recurrent_layer_called_twice_exports_each_call(tmp_path, fmt):
    """A siamese encoder: one LSTM over two inputs, the first masked (padding at the end of
    one row, the start of another), the second not: each call keeps its own mask."""
    import keras

    keras.utils.set_random_seed(6)
    left, right = keras.Input((6,), dtype="int32", name="left"), keras.Input((6, 3), name="right")
    encoder = keras.layers.LSTM(4, bias_initializer="uniform", name="shared")
    embedded = keras.layers.Embedding(10, 3, mask_zero=True)(left)
    distance = keras.layers.Subtract()([encoder(embedded), encoder(right)])
    model = keras.Model([left, right], distance)
    ids = np.array([[3, 4, 5, 0, 0, 0], [0, 0, 7, 8, 9, 1], [2, 3, 4, 5, 6, 7]], np.int32)
    feeds = {"left": ids, "right": _sequences((3, 6, 3))}
    expected = np.asarray(model([ids, feeds["right"]]))
    path = _export(model, tmp_path / f"m.{fmt}", 3)
    for runtime, outputs in _outputs_everywhere(path, feeds).items():
        assert_outputs_close(runtime, outputs["outputs"], expected, TOLERANCE[fmt])


def test_a_shared_recurrent_layer_does_not_stream():
    """A step model keeps one state per layer: a layer called twice would mix its calls'
    states (measured: 0.47 and 0.74 off), so it is refused, naming the layer."""
    import keras

    from export.streaming import check_streams

    inputs = keras.Input((None, 5))
    shared = keras.layers.GRU(4, return_sequences=True, name="twice")
    model = keras.Model(inputs, keras.layers.Add()([shared(inputs),
                                                    shared(keras.layers.Dense(5)(inputs))]))
    with pytest.raises(ValueError, match="'twice' .* called 2 times"):
        check_streams(model)


@pytest.mark.parametrize("form", first_fast(["while", "unrolled"]))
def test_dropout_exports_in_every_form_and_is_left_on_the_model(tmp_path, form):
    """Dropout, recurrent dropout and dropout inside TimeDistributed(LSTM) (its seed generator
    stopped the WHILE form and every TimeDistributed export); inference ignores them."""
    import keras

    keras.utils.set_random_seed(8)
    inputs = keras.Input((3, 5, 4))
    x = keras.layers.TimeDistributed(keras.layers.LSTM(4, dropout=0.3, recurrent_dropout=0.2))(
        inputs)
    lstm = keras.layers.LSTM(3, dropout=0.2, recurrent_dropout=0.4, bias_initializer="uniform")
    model = keras.Model(inputs, lstm(x))
    x = _sequences((2, 3, 5, 4))
    for path in (export_tflite(model, tmp_path / "m.tflite", form=form, batch_size=2),
                 export_onnx(model, tmp_path / "m.onnx")):
        _assert_matches_keras(model, path, x, TOLERANCE[path.suffix[1:]])
        if path.suffix == ".onnx":  # the LSTM inside TimeDistributed too: one native operator
            assert set(_forms(path).values()) == {"native operator"}, _forms(path)
            assert [node.op_type for node in _onnx_nodes(path)].count("LSTM") == 2
    assert (lstm.cell.dropout, lstm.cell.recurrent_dropout) == (0.2, 0.4)


def _onnx_nodes(path):
    import onnx

    return list(onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("fmt", BOTH_FORMATS)
def test_a_recurrent_layer_inside_time_distributed_streams_whole_per_step(tmp_path, fmt):
    """A step model over the outer time axis of (batch, time, words, features): the LSTM
    inside TimeDistributed runs over each step's words whole, the GRU after it carries its
    state from step to step; step by step equals Keras on the whole sequence."""
    import keras

    from export import verify_step
    from export.streaming import export_step

    keras.utils.set_random_seed(12)
    inputs = keras.Input((None, 5, 3))
    x = keras.layers.TimeDistributed(keras.layers.LSTM(4, bias_initializer="uniform"))(inputs)
    model = keras.Model(inputs, keras.layers.GRU(3, return_sequences=True)(x))
    path = export_step(model, tmp_path / f"m.step.{fmt}", batch_size=2)
    x = _sequences((2, 6, 5, 3))
    expected = np.asarray(model(x))
    stream = StepModel(path)
    state, steps = stream.initial_state(2), []
    for t in range(x.shape[1]):
        output, state = stream.step(x[:, t], state)
        steps.append(output)
    assert_outputs_close(fmt, np.stack(steps, axis=1), expected, TOLERANCE[fmt])
    report = verify_step(model, path)
    assert report.passed, str(report)


def _subclassed(kind):
    """A subclassed model called on data, and its inputs. "char": the TensorFlow
    text-generation tutorial's shape, `call(inputs, states=None, return_state=False,
    training=False)` over Embedding, GRU and Dense; "masked": Embedding(mask_zero=True), a
    Bidirectional LSTM and a GRU, padding at the start and in the middle of rows; "wrapper":
    a subclassed model around a functional encoder (Masking, SimpleRNN)."""
    import keras

    keras.utils.set_random_seed(9)
    rng = np.random.default_rng(1)
    uniform = {"bias_initializer": "uniform"}

    class CharModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras.layers.Embedding(12, 4)
            self.gru = keras.layers.GRU(6, return_sequences=True, return_state=True, **uniform)
            self.dense = keras.layers.Dense(12)

        def call(self, inputs, states=None, return_state=False, training=False):
            x = self.embedding(inputs, training=training)
            x, states = self.gru(x, initial_state=states, training=training)
            x = self.dense(x, training=training)
            return (x, states) if return_state else x

    class MaskedModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras.layers.Embedding(12, 4, mask_zero=True)
            self.encoder = keras.layers.Bidirectional(
                keras.layers.LSTM(5, return_sequences=True, **uniform))
            self.gru = keras.layers.GRU(3, **uniform)

        def call(self, inputs, training=False):
            return self.gru(self.encoder(self.embedding(inputs)))

    class Wrapper(keras.Model):
        def __init__(self):
            super().__init__()
            features = keras.Input((None, 3))
            self.encoder = keras.Model(features, keras.layers.SimpleRNN(4, **uniform)(
                keras.layers.Masking()(features)))
            self.head = keras.layers.Dense(2)

        def call(self, inputs):
            return self.head(self.encoder(inputs))

    if kind == "wrapper":
        x = _sequences((2, 6, 3))
        x[0, 4:], x[1, 1] = 0, 0
        model = Wrapper()
    else:
        x = rng.integers(1, 12, (2, 8)).astype(np.int32)
        x[0, :3], x[1, 3:5] = 0, 0
        model = CharModel() if kind == "char" else MaskedModel()
    model(x)
    return model, x


@pytest.mark.parametrize("kind", first_fast(("masked", "char", "wrapper")))
def test_a_subclassed_models_recurrent_layers_get_native_forms(tmp_path, kind):
    """A subclassed model is traced as Keras's exporters trace it (its Python `call` run on
    its inputs), with each built-in recurrent layer it calls swapped for its native form: the
    unrolled loop in TFLite, the RNN/LSTM/GRU operator in ONNX (no Loop), masks as Keras
    applies them."""
    import onnx

    model, x = _subclassed(kind)
    native = {"tflite": "unrolled", "onnx": "native operator"}
    for path in (export_tflite(model, tmp_path / "m.tflite", batch_size=2),
                 export_onnx(model, tmp_path / "m.onnx")):
        fmt = path.suffix[1:]
        assert set(_forms(path).values()) == {native[fmt]}, _forms(path)
        _assert_matches_keras(model, path, x, TOLERANCE[fmt])
        report = verify(model, path, x)
        assert report.passed, str(report)
    op_types = {node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node}
    assert "Loop" not in op_types and op_types & {"RNN", "LSTM", "GRU"}, op_types
    assert all("call" not in vars(layer) for layer in model._flatten_layers())  # put back


def test_a_subclassed_models_cell_run_by_its_own_loop_keeps_the_converters_form(tmp_path):
    """A layer whose cell the model's Python steps itself (the layer never called) is not
    reported native: its steps are the model's own code, as traced."""
    import keras

    keras.utils.set_random_seed(4)

    class CellSteps(keras.Model):
        def __init__(self):
            super().__init__()
            self.gru = keras.layers.GRU(4, return_sequences=True, bias_initializer="uniform")
            self.lstm = keras.layers.LSTM(4, bias_initializer="uniform")

        def build(self, input_shape):
            self.gru.build(input_shape)
            self.lstm.build(input_shape[:2] + (4,))

        def call(self, inputs):
            x = self.gru(inputs)
            states = [keras.ops.zeros((keras.ops.shape(x)[0], 4))] * 2
            for step in range(x.shape[1]):
                outputs, states = self.lstm.cell(x[:, step], states)
            return outputs

    model = CellSteps()
    x = _sequences((2, 5, 3))
    model(x)
    path = export_onnx(model, tmp_path / "m.onnx")
    forms = _forms(path)
    assert forms == {model.gru.name: "native operator", model.lstm.name: "converter loop"}, forms
    _assert_matches_keras(model, path, x, ONNX_TOLERANCE)


def _half_model(kind):
    import keras

    keras.utils.set_random_seed(10)
    policy = {"mixed_float16": "mixed_float16", "float16": "float32",
              "mixed_bfloat16": "mixed_bfloat16"}[kind]
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        inputs = keras.Input((12, 5), dtype="float16" if kind == "float16" else "float32")
        if kind == "float16":
            x = keras.layers.GRU(8, dtype="float16", bias_initializer="uniform")(inputs)
        elif kind == "mixed_float16":
            x = keras.layers.LSTM(8, bias_initializer="uniform")(inputs)
        else:
            x = keras.layers.Bidirectional(keras.layers.GRU(6, bias_initializer="uniform"))(inputs)
        outputs = keras.layers.Dense(3, dtype="float32")(x)
        return keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


@pytest.mark.parametrize("kind", first_fast(("mixed_float16", "float16", "mixed_bfloat16")))
def test_half_precision_models_export_computing_in_float32(tmp_path, kind):
    """The files compute in float32: they equal the same architecture built in float32 with
    the same weights to float32 precision, and Keras's half-precision answer within the half
    type's bound; a file of another model fails that bound."""
    import keras

    model = _half_model(kind)
    half = "bfloat16" if "bfloat16" in kind else "float16"
    keras.mixed_precision.set_dtype_policy("float32")
    float32 = keras.Model.from_config(json.loads(
        json.dumps(model.get_config()).replace(f'"{kind}"', '"float32"')
        .replace('"float16"', '"float32"').replace('"mixed_bfloat16"', '"float32"')))
    float32.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    x = _sequences((3, 12, 5))
    other = _half_model(kind)
    other.set_weights([w * 1.5 for w in other.get_weights()])
    for path in (export_tflite(model, tmp_path / "m.tflite", batch_size=3),
                 export_onnx(model, tmp_path / "m.onnx")):
        fmt = path.suffix[1:]
        _assert_matches_keras(float32, path, x, TOLERANCE[fmt])
        _assert_matches_keras(model, path, x, HALF_PRECISION_TOLERANCE[half])
        report = verify(model, path)
        assert report.passed and report.tolerance == HALF_PRECISION_TOLERANCE[half], report
        wrong = verify(other, path)
        assert not wrong.passed, f"{fmt}: another model's file passed: {wrong}"


@pytest.mark.parametrize("dtype", first_fast(["uint8", "int64", "float16"]))
def test_every_input_dtype_keras_takes_runs_and_verifies(tmp_path, dtype):
    """Ids as uint8 or int64 into an Embedding (masked), float16 features: the runtime feeds
    arrays of that dtype, and verify draws its inputs to match."""
    import keras

    keras.utils.set_random_seed(11)
    if dtype == "float16":
        inputs = keras.Input((7, 3), dtype="float16")
        x = keras.layers.Masking()(inputs)
        data = _sequences((2, 7, 3)).astype(np.float16)
        data[0, 5:] = 0
    else:
        inputs = keras.Input((7,), dtype=dtype)
        x = keras.layers.Embedding(20, 3, mask_zero=True)(inputs)
        data = np.array([[4, 5, 6, 0, 0, 0, 0], [0, 0, 1, 2, 19, 3, 4]], dtype)
    model = keras.Model(inputs, keras.layers.GRU(4, bias_initializer="uniform")(x))
    for path in (export_tflite(model, tmp_path / "m.tflite", batch_size=2),
                 export_onnx(model, tmp_path / "m.onnx")):
        _assert_matches_keras(model, path, data, TOLERANCE[path.suffix[1:]])
        assert verify(model, path).passed


def test_an_op_no_converter_writes_is_refused_naming_the_layer(tmp_path):
    """gelu (exact) runs TensorFlow's Erfc, which tf2onnx does not convert (nor does Keras's
    own ONNX export): refused with the op and the layer it came from, no file written."""
    import keras

    from keras_rnn.structure import UnsupportedModelError

    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.GRU(4, activation="gelu", name="gelu_gru")(inputs))
    with pytest.raises(UnsupportedModelError, match="Erfc .*gelu_gru"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


JAX_FILE = Path(__file__).resolve().parent / "data" / "jax_backend_bigru.keras"
JAX_IDS = np.array([[0, 0, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0], [1, 2, 0, 3, 4, 39]], np.int32)


@pytest.mark.slow
def test_a_model_saved_under_the_jax_backend_exports_with_jaxs_answer(tmp_path):
    """`tests/data/make_jax_backend_model.py` wrote the file and the outputs under JAX (masked
    BiGRU and LSTM, padding at the start, end and middle): loaded here under TensorFlow, both
    files give the outputs JAX computed."""
    import keras

    model = keras.models.load_model(JAX_FILE)
    expected = np.load(JAX_FILE.with_suffix(".expected.npy"))
    # float32 sums in another order by another backend: measured 3e-8; 1e-5 as for ONNX files
    assert_outputs_close("keras under tensorflow", np.asarray(model(JAX_IDS)), expected, 1e-5)
    for path in (export_tflite(model, tmp_path / "m.tflite", batch_size=3, seq_len=6),
                 export_onnx(model, tmp_path / "m.onnx")):
        for runtime, outputs in _outputs_everywhere(path, {"inputs": JAX_IDS}).items():
            assert_outputs_close(runtime, outputs["outputs"], expected, TOLERANCE[path.suffix[1:]])


def _token_model(vocabulary, *, stateful=False, seed=12):
    """Tokens -> StringLookup (mask token "") -> masked Embedding -> GRU -> Dense: a model
    that takes the words themselves."""
    import keras

    keras.utils.set_random_seed(seed)
    words = keras.Input((6,), dtype="string", batch_size=4 if stateful else None)
    ids = keras.layers.StringLookup(vocabulary=vocabulary, mask_token="", name="lookup")(words)
    x = keras.layers.Embedding(len(vocabulary) + 2, 4, mask_zero=True)(ids)
    x = keras.layers.GRU(5, bias_initializer="uniform", stateful=stateful)(x)
    return keras.Model(words, keras.layers.Dense(3)(x))


# known tokens, one never seen, one beyond ASCII, the mask token "" at the start, end and middle
TOKENS = np.array([["", "", "the", "cat", "sat", "down"],
                   ["dog", "ran", "", "", "", ""],
                   ["the", "", "zebra", "été", "dog", ""],
                   ["a", "dog", "sat", "the", "cat", "ran"]])
VOCABULARY = ["a", "cat", "dog", "down", "ran", "sat", "the", "été"]


@pytest.mark.parametrize("form, stateful", [
    ("unrolled", False), pytest.param("while", False, marks=pytest.mark.slow),
    pytest.param("unrolled", True, marks=pytest.mark.slow)])
def test_a_string_lookup_model_exports_to_tflite_with_its_table(tmp_path, form, stateful):
    """The TFLite file keeps the StringLookup's table (HASHTABLE builtins) and takes the
    strings themselves, as Keras's builtins-only LiteRT export does; verify draws its tokens
    from the vocabulary, unseen and non-ASCII ones, and catches a file of a model whose
    vocabulary is in another order (the same weights reading other ids)."""
    from export.runtime import operator_names

    model = _token_model(VOCABULARY, stateful=stateful)
    path = export_tflite(model, tmp_path / "m.tflite", batch_size=4, form=form)
    assert {"HASHTABLE", "HASHTABLE_FIND"} <= set(operator_names(path.read_bytes()))
    loaded = load(path)
    for call in range(2 if stateful else 1):  # a stateful file carries its state on
        assert_outputs_close(f"{form} call {call}", loaded.run(TOKENS),
                             np.asarray(model(TOKENS, training=False)), TFLITE_TOLERANCE)
    assert loaded.run(TOKENS.astype(object)).shape == (4, 3)  # str objects and bytes alike
    report = verify(model, path, TOKENS)
    assert report.passed, str(report)
    shuffled = _token_model(VOCABULARY[::-1], stateful=stateful)
    shuffled.set_weights(model.get_weights())
    wrong = verify(shuffled, path, TOKENS)
    assert not wrong.passed, f"a file of another vocabulary order passed: {wrong}"


def test_string_inputs_are_refused_where_no_builtin_reads_them(tmp_path):
    """ONNX (tf2onnx's lookup table does not load in ONNX Runtime), step files, int8
    calibration and TextVectorization's text ops (regular expressions, splitting): one line
    each naming the layer and what to do, no file written."""
    import keras

    from export.streaming import export_step
    from keras_rnn.structure import UnsupportedModelError

    model = _token_model(VOCABULARY)
    with pytest.raises(UnsupportedModelError, match=r"strings, read by \['lookup'\]: .onnx"):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="step files take numbers"):
        export_step(model, tmp_path / "m.step.tflite")
    with pytest.raises(UnsupportedModelError, match="int8' calibrates numbers only"):
        export_tflite(model, tmp_path / "m.tflite", batch_size=4, quantize="int8",
                      representative_data=TOKENS)
    text = keras.Input((1,), dtype="string")
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6,
                                               name="vectorize")
    vectorize.adapt(["the cat sat", "a dog ran far away"])
    x = keras.layers.Embedding(20, 4, mask_zero=True)(vectorize(text))
    sentences = keras.Model(text, keras.layers.LSTM(3)(x))
    with pytest.raises(ValueError, match=r"read by \['vectorize'\], which need .*StringSplit"
                                         r".* ops TFLite has no builtin for"):
        export_tflite(sentences, tmp_path / "m.tflite", batch_size=2)
    assert list(tmp_path.iterdir()) == []


def test_a_string_input_file_refuses_numbers_and_lost_bytes(tmp_path):
    """The runtime feeds text as UTF-8; numbers, a token ending in a NUL byte (which a NumPy
    bytes array would silently drop) and text UTF-8 cannot encode are refused in one line."""
    path = export_tflite(_token_model(VOCABULARY), tmp_path / "m.tflite", batch_size=4)
    loaded = load(path)
    with pytest.raises(ValueError, match="expects strings for input; got int64"):
        loaded.run(np.zeros((4, 6), np.int64))
    nul = TOKENS.astype(object)
    nul[0, 0] = "cat\0"
    with pytest.raises(ValueError, match="ending in a NUL byte"):
        loaded.run(nul)
    nul[0, 0] = "\ud800"  # a lone surrogate: Keras (TensorFlow) cannot take it either
    with pytest.raises(ValueError, match="not valid text"):
        loaded.run(nul)
