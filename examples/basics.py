"""basics: the shapes of an RNN's inputs, outputs and states (S1 lab 12-0, P2 lab 11-0).

One-hot h=[1,0,0,0], e=[0,1,0,0], l=[0,0,1,0], o=[0,0,0,1] go through a recurrent layer of
hidden size 2: one character `[[h]]`, the word `hello`, and the batch `hello, eolll, lleel`;
then a 3-layer stack and a bidirectional layer. Keras is batch-first: (batch, timesteps,
features), unlike the P2 lecture's PyTorch RNN, which reads a (3, 5, 4) batch as 3 steps of 5.

Run:  python examples/basics.py [--cell gru]
"""

import argparse

import numpy as np

from export.table import format_table
from keras_rnn import CELLS, datasets

## Setup
HIDDEN = 2
SEED = 0


## Data
def one_hot(words):
    index = {char: i for i, char in enumerate(datasets.BASICS_CHARS)}
    return np.eye(len(index), dtype=np.float32)[[[index[c] for c in word] for word in words]]


## Model
def run(cell: str, *, verbose: bool = True) -> dict:
    """Returns the shapes the lecture prints, by name."""
    import keras

    keras.utils.set_random_seed(SEED)
    layer_class = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
                   "gru": keras.layers.GRU}[cell]
    shapes = {}
    h = one_hot(["h"])  # (1, 1, 4)
    hello = one_hot(["hello"])  # (1, 5, 4)
    batch = one_hot(datasets.BASICS_BATCH)  # (3, 5, 4)

    layer = layer_class(HIDDEN, return_sequences=True, return_state=True)
    outputs, *states = layer(h)
    shapes["[[h]] outputs"] = outputs.shape
    outputs, *states = layer(hello)
    shapes["hello outputs"] = outputs.shape
    outputs, *states = layer(batch)
    shapes["batch outputs"] = outputs.shape
    shapes["batch states"] = [tuple(s.shape) for s in states]  # [h] or [h, c] for LSTM
    last, *_ = layer_class(HIDDEN, return_state=True)(hello)
    shapes["hello last output"] = last.shape

    stack = keras.Sequential([keras.Input((5, 4))] + [
        layer_class(HIDDEN, return_sequences=True) for _ in range(3)])
    shapes["3-layer stack outputs"] = stack(batch).shape
    bidirectional = keras.layers.Bidirectional(layer_class(HIDDEN, return_sequences=True))
    shapes["bidirectional outputs"] = bidirectional(batch).shape
    shapes = {name: tuple(value) if not isinstance(value, list) else value
              for name, value in shapes.items()}
    if verbose:
        for name, value in shapes.items():
            print(f"{cell:>10}  {name:<22} {value}")
    return shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    args = parser.parse_args()
    rows = []
    for cell in [args.cell] if args.cell else CELLS:
        shapes = run(cell)
        rows.append((cell, shapes["[[h]] outputs"], shapes["hello outputs"],
                     shapes["batch outputs"], shapes["batch states"],
                     shapes["bidirectional outputs"]))
    print()
    print(format_table(("cell", "[[h]]", "hello", "batch", "batch states", "bidirectional"),
                       rows))


if __name__ == "__main__":
    main()

# Expected output, the summary table:
# cell        [[h]]      hello      batch      batch states      bidirectional
# ----------  ---------  ---------  ---------  ----------------  -------------
# simple_rnn  (1, 1, 2)  (1, 5, 2)  (3, 5, 2)  [(3, 2)]          (3, 5, 4)
# lstm        (1, 1, 2)  (1, 5, 2)  (3, 5, 2)  [(3, 2), (3, 2)]  (3, 5, 4)
# gru         (1, 1, 2)  (1, 5, 2)  (3, 5, 2)  [(3, 2)]          (3, 5, 4)
