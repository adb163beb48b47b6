"""Property-based parity: random supported model configurations exported to both formats and
compared with Keras in LiteRT and ONNX Runtime.

`random_case(seed)` draws one configuration (cell, depth, bidirectional merge mode, one-hot /
Masking / Embedding(mask_zero) input, padding at the start, end and middle of rows, GRU
variant, activations, biases, head, batch 1-4, length 1-60) and seeded inputs;
`check_case(case, directory)` exports it and measures both files. The test suite runs a
modest number of seeds (`tests/test_sweep.py`); `benchmarks/parity_sweep.py` runs many and
prints the failure rate. (Test code: it lives beside the tests, and the benchmark script
imports it from here.)

A model whose outputs grow beyond `OVERFLOW` (relu/linear recurrences over long sequences)
is reported as such: its float32 differences grow with its magnitude, so it is judged
relative to that magnitude (`bound`); NaN outputs are compared NaN-aware (`compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.parity.inputs import padding_patterns
from keras_rnn.cells import cell as cell_kind
from keras_rnn.cells import keras_layer_class
from keras_rnn.structure import CELLS, RNN_ACTIVATIONS

OVERFLOW = 100.0  # |Keras output| beyond which a case counts as overflowing
MERGE_MODES = ("concat", "sum", "ave", "mul")
INPUT_KINDS = ("one_hot", "masking", "embedding")
HEADS = ("softmax", "linear", "none")


@dataclass(frozen=True)
class Case:
    seed: int
    description: str  # the configuration, readable
    model: object  # the Keras model
    inputs: np.ndarray  # (batch, steps[, features]) with its padding


# Gate activations drawn for the recurrent slot: the bounded ones. An unbounded gate (linear,
# relu, softplus, elu) makes the recurrence chaotic, so the float32 rounding of any two correct
# implementations grows apart without bound (measured: a GRU with linear gates, seed 419,
# outputs of 2e13 that ONNX Runtime and Keras compute 7e-5 of their scale apart). Those gates
# are checked on fixed cases (tests/test_verify.py's runtime-claim test).
BOUNDED_GATES = ("sigmoid", "hard_sigmoid", "tanh", "softsign")


def _activation(rng, favoured: str, names=RNN_ACTIVATIONS) -> str:
    """One of `names` (natively written recurrent activations): the slot's Keras default 60%
    of the time, each other one equally often."""
    others = [name for name in names if name != favoured]
    return favoured if rng.random() < 0.6 else str(rng.choice(others))


def random_case(seed: int) -> Case:
    """One random supported configuration and its inputs, reproducible from `seed`."""
    import keras

    rng = np.random.default_rng(seed)
    cell = str(rng.choice(CELLS))
    layers_count = int(rng.integers(1, 3))
    bidirectional = bool(rng.random() < 0.4)
    merge_mode = str(rng.choice(MERGE_MODES))
    kind = str(rng.choice(INPUT_KINDS))
    batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 61))
    features, units = int(rng.integers(2, 7)), int(rng.integers(1, 9))
    head = str(rng.choice(HEADS))
    return_sequences = bool(rng.random() < 0.5)
    options = dict(use_bias=bool(rng.random() < 0.8),
                   activation=_activation(rng, favoured="tanh"))
    if cell_kind(cell).uses_recurrent_activation:
        options["recurrent_activation"] = _activation(rng, favoured="sigmoid",
                                                      names=BOUNDED_GATES)
    if cell == "gru":
        options["reset_after"] = bool(rng.random() < 0.5)
    go_backwards = not bidirectional and bool(rng.random() < 0.2)
    layer_class = keras_layer_class(cell)

    keras.utils.set_random_seed(seed)
    if kind == "embedding":
        inputs = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(features + 1, 4, mask_zero=True)(inputs)
    else:
        inputs = keras.Input((None, features))
        x = keras.layers.Masking(0.0)(inputs) if kind == "masking" else inputs
    for index in range(layers_count):
        last = index == layers_count - 1
        layer = layer_class(units, return_sequences=return_sequences or not last,
                            go_backwards=go_backwards, **options)
        x = keras.layers.Bidirectional(layer, merge_mode=merge_mode)(x) if bidirectional else layer(x)
    if head != "none":
        x = keras.layers.Dense(3, activation=head)(x)
    model = keras.Model(inputs, x, name=f"case_{seed}")

    if kind == "embedding":
        data = rng.integers(1, features + 1, (batch, steps)).astype(np.int32)
    elif kind == "masking":
        data = rng.normal(size=(batch, steps, features)).astype(np.float32)
    else:
        data = np.eye(features, dtype=np.float32)[rng.integers(0, features, (batch, steps))]
    padding = "none"
    if kind != "one_hot" and steps > 1:
        padding = str(rng.choice(("start", "end", "middle")))
        data[~padding_patterns(batch, steps, rng, patterns=(padding,))] = 0
    description = (f"{cell} x{layers_count}{' bi-' + merge_mode if bidirectional else ''}"
                   f"{' backwards' if go_backwards else ''} {kind} pad:{padding} "
                   f"units {units} {options} head {head} seq {return_sequences} "
                   f"batch {batch} steps {steps}")
    return Case(seed, description, model, data)


def check_case(case: Case, directory) -> dict:
    """Exports `case.model` to both formats, runs the files on `case.inputs` and returns the
    max abs difference of each against Keras, with whether the model overflows."""
    from helpers import runtimes_for

    from export.onnx.exporter import export_onnx
    from export.parity.verifier import compare
    from export.runtime import load
    from export.tflite.exporter import export_tflite

    directory = Path(directory)
    expected = np.asarray(case.model(case.inputs))
    batch, steps = case.inputs.shape[:2]
    onnx_path = export_onnx(case.model, directory / f"case_{case.seed}.onnx")
    tflite_path = export_tflite(case.model, directory / f"case_{case.seed}.tflite",
                                batch_size=batch, seq_len=steps)
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 0.0
    return {
        # NaN-aware: both NaN agree, NaN against a number is inf
        # in every ONNX runtime the file claims (tests/helpers.py)
        "onnx": max(compare(load(onnx_path, runtime=runtime).run(case.inputs), expected)[0]
                    for runtime in runtimes_for(onnx_path)),
        "tflite": compare(load(tflite_path, trusted=True).run(case.inputs), expected)[0],
        "overflowing": scale > OVERFLOW,
        "scale": scale,
    }


def bound(tolerance: float, result: dict) -> float:
    """The case's bound: `tolerance`, scaled up by the outputs' magnitude beyond OVERFLOW
    (float32 differences are relative to the values they round)."""
    return tolerance * max(1.0, result["scale"] / OVERFLOW)
