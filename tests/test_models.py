import numpy as np
import pytest
from helpers import CELLS, first_fast

from keras_rnn import RNNConfig, build_model


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "options, input_shape, output_shape",
    [
        (dict(), (2, 6, 5), (2, 6, 5)),  # the TF lecture: RNN + Dense per step
        (dict(output_size=None), (2, 6, 5), (2, 6, 4)),  # the PyTorch lecture: RNN outputs
        (dict(return_sequences=False), (2, 6, 5), (2, 5)),
        (dict(num_layers=3), (2, 6, 5), (2, 6, 5)),
        (dict(bidirectional=True, output_size=None), (2, 6, 5), (2, 6, 8)),
        (dict(dropout=0.2, num_layers=2), (2, 6, 5), (2, 6, 5)),
        (dict(inputs="ids", mask_zero=True), (2, 6), (2, 6, 5)),
        (dict(inputs="embedding", embedding_dim=3), (2, 6), (2, 6, 5)),
        (dict(mask_zero=True, seq_len=6), (2, 6, 5), (2, 6, 5)),
    ],
)
def test_build_model_options_give_the_lecture_shapes(cell, options, input_shape, output_shape):
    model = build_model(**{"cell": cell, "input_size": 5, "hidden_size": 4, "output_size": 5,
                           **options})
    if len(input_shape) == 2:
        x = np.random.default_rng(0).integers(1, 5, input_shape).astype("int32")
    else:
        x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    assert tuple(model(x).shape) == output_shape


def test_config_object_and_keyword_overrides():
    config = RNNConfig(cell="gru", input_size=3, hidden_size=7)
    model = build_model(config, num_layers=2)
    recurrent = [layer for layer in model.layers if "gru" in layer.name]
    assert [layer.units for layer in recurrent] == [7, 7]
    assert recurrent[0].return_sequences and recurrent[1].return_sequences


def test_fixed_one_hot_embedding_is_the_identity_and_frozen():
    model = build_model(cell="simple_rnn", inputs="ids", input_size=6, hidden_size=2)
    embedding = model.get_layer("one_hot")
    np.testing.assert_array_equal(embedding.embeddings.numpy(), np.eye(6))
    assert not embedding.trainable


def test_mask_zero_skips_padding():
    model = build_model(cell="lstm", inputs="ids", input_size=5, hidden_size=3, mask_zero=True,
                        return_sequences=False, output_size=2)
    padded = np.array([[1, 2, 3, 0, 0]], np.int32)
    unpadded = np.array([[1, 2, 3]], np.int32)
    np.testing.assert_allclose(model(padded), model(unpadded), atol=1e-6)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(cell="lstn"), r"Unknown cell 'lstn': expected one of 'simple_rnn', 'lstm', 'gru'"),
        (dict(hidden_size=0), r"`hidden_size`: expected a positive integer, got 0"),
        (dict(hidden_size=2.5), r"`hidden_size`: expected a positive integer, got 2.5"),
        (dict(num_layers=-1), r"`num_layers`"),
        (dict(dropout=1.0), r"`dropout`: expected a rate in \[0, 1\), got 1.0"),
        (dict(inputs="words"), r"Unknown inputs 'words'"),
        (dict(inputs="embedding"), r"`embedding_dim`"),
        (dict(embedding_dim=4), r"only used with inputs='embedding'"),
        (dict(output_activation="relu"), r"output_activation 'relu'"),
        (dict(seq_len=0), r"`seq_len`"),
    ],
)
def test_bad_arguments_say_what_was_received(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_model(**arguments)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unknown arguments \\['hiden_size'\\]"):
        build_model(hiden_size=3)


@pytest.mark.slow
def test_train_passes_callbacks_and_validation_data_to_fit():
    import keras

    from keras_rnn import seed_everything, train

    seed_everything(0)
    model = build_model(cell="gru", input_size=5, hidden_size=4, output_size=5, seq_len=6)
    x = np.eye(5, dtype=np.float32)[np.array([[1, 2, 1, 0, 3, 3]])]
    y = np.array([[2, 1, 0, 3, 3, 4]])
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    losses = train(model, x, y, epochs=12, learning_rate=0.1, report_every=4,
                   callbacks=[Record()], validation_data=(x, y))
    assert len(losses) == 3  # one value per report period, as the docstring says
    assert len(seen) == 3 and "val_loss" in seen[-1], seen


@pytest.mark.parametrize("options", [
    dict(),
    dict(inputs="ids", mask_zero=True, return_sequences=False, output_size=2),
    dict(inputs="embedding", embedding_dim=3, bidirectional=True, num_layers=2, dropout=0.1),
])
@pytest.mark.parametrize("cell", first_fast(CELLS))
def test_models_survive_a_keras_save_and_export_from_the_loaded_file(tmp_path, cell, options):
    import keras

    from export import export_onnx, verify

    keras.utils.set_random_seed(1)
    model = build_model(cell=cell, input_size=6, hidden_size=4, **options)
    x = (np.random.default_rng(0).integers(1, 6, (3, 7)).astype(np.int32)
         if "inputs" in options else np.random.default_rng(0).normal(size=(3, 7, 6)).astype("f"))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    report = verify(model, export_onnx(loaded, tmp_path / "m.onnx"), x)
    assert report.passed, str(report)
