"""The cell table (`keras_rnn.cells`): its facts against Keras's own cells, and its refusals."""

import numpy as np
import pytest

from keras_rnn.cells import CELLS, cell, cell_of, keras_layer_class


@pytest.mark.parametrize("name", CELLS)
def test_each_entry_matches_the_keras_cell_it_names(name):
    import keras

    kind = cell(name)
    layer = keras_layer_class(name)(3)
    layer.build((None, 4, 2))
    assert cell_of(layer.cell) is kind and type(layer.cell).__name__ == kind.keras_cell
    assert layer.cell.kernel.shape == (2, len(kind.gates) * 3)  # gate blocks of `units` columns
    state_size = layer.cell.state_size
    assert len(state_size if isinstance(state_size, (list, tuple)) else [state_size]) == len(
        kind.states)
    assert sorted(kind.onnx_gates) == sorted(kind.gates)  # a reordering, nothing lost
    assert isinstance(layer, getattr(keras.layers, kind.keras_layer))


def test_lstm_gates_are_reordered_for_onnx():
    # Keras blocks i, f, c, o (units 2) -> ONNX i, o, f, c
    keras_order = np.array([[1, 1, 2, 2, 3, 3, 4, 4]], np.float32)
    np.testing.assert_array_equal(cell("lstm").keras_to_onnx_gates(keras_order, 2),
                                  [[1, 1, 4, 4, 2, 2, 3, 3]])
    gru = np.arange(6, dtype=np.float32)[None]
    np.testing.assert_array_equal(cell("gru").keras_to_onnx_gates(gru, 2), gru)  # same order


def test_unknown_kinds_are_refused_by_name_and_subclasses_are_not_taken_for_their_base():
    import keras

    with pytest.raises(ValueError, match="Unknown cell 'lstn': expected one of 'simple_rnn', "
                       "'lstm', 'gru'"):
        cell("lstn")

    class PeepholeCell(keras.layers.LSTMCell):  # computes something else under the same base
        pass

    assert cell_of(PeepholeCell(3)) is None
    assert cell_of(keras.layers.LSTMCell(3)) is cell("lstm")
