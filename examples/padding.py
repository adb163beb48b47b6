"""padding and masking: a batch of different lengths gives each sequence what it gives alone
(P2 lab 11-6, PyTorch's PackedSequence, done the Keras way).

Five words of lengths 11, 8, 11, 4 and 13, one-hot, padded at the end with `<pad>` (an all-zero
row) to 13, through a Masking layer and an RNN of hidden size 30 (untrained, as in the lecture:
the point is the bookkeeping, not learning). With masking, each word's output at its last real
character equals the output of running that word alone, unpadded; without masking the padding
steps keep changing the state. The exported TFLite and ONNX files are then checked on the same
padded batch.

Run:  python examples/padding.py [--cell lstm] [--export out/]
"""

import argparse

import numpy as np
from lecture import print_summary

from export.pipeline import export_and_verify
from keras_rnn import CELLS, Vocabulary, build_model, datasets, seed_everything

## Setup
HIDDEN = 30
SEED = 0


## Data
def data():
    words = datasets.PADDING_WORDS
    vocabulary = Vocabulary.from_texts(words, pad=True)  # <pad>, ' ', a, c, d, ...
    ids = vocabulary.encode_batch(words)  # (5, 13), <pad> = 0 at the end of each row
    lengths = [len(word) for word in words]  # 11, 8, 11, 4, 13
    return vocabulary, vocabulary.one_hot(ids), lengths


## The demo
def run(cell: str, *, verbose: bool = True) -> dict:
    """Builds a masked and an unmasked model with the same weights; returns per word the
    difference between its padded-batch output and its output alone."""
    vocabulary, x, lengths = data()
    seed_everything(SEED)
    options = dict(cell=cell, input_size=len(vocabulary), hidden_size=HIDDEN,
                   return_sequences=True)
    masked = build_model(**options, mask_zero=True, name=f"padding_{cell}")
    unmasked = build_model(**options, name=f"padding_{cell}_unmasked")
    unmasked.set_weights(masked.get_weights())
    batch_masked, batch_unmasked = np.asarray(masked(x)), np.asarray(unmasked(x))
    rows = []
    for word, row, length in zip(datasets.PADDING_WORDS, range(len(x)), lengths):
        alone = np.asarray(masked(x[row:row + 1, :length]))[0, -1]  # unpadded, by itself
        rows.append({
            "word": word,
            "length": length,
            "masked, last real step": float(np.abs(batch_masked[row, length - 1] - alone).max()),
            "masked, last padded step": float(np.abs(batch_masked[row, -1] - alone).max()),
            "unmasked, last padded step": float(np.abs(batch_unmasked[row, -1] - alone).max()),
        })
    if verbose:
        print(f"{cell}: input {x.shape}, outputs {batch_masked.shape}, lengths {lengths}")
    return {"model": masked, "vocabulary": vocabulary, "x": x, "lengths": lengths, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--export", metavar="DIR", help="export the masked model to TFLite and "
                        "ONNX in DIR and check them on the padded batch")
    args = parser.parse_args()
    rows, parity_rows = [], []
    for cell in [args.cell] if args.cell else CELLS:
        result = run(cell)
        for row in result["rows"]:
            rows.append((cell, repr(row["word"]), row["length"],
                         f"{row['masked, last real step']:.1e}",
                         f"{row['masked, last padded step']:.1e}",
                         f"{row['unmasked, last padded step']:.1e}"))
        if args.export:
            x = result["x"]
            parity_rows += export_and_verify(result["model"], args.export, f"padding_{cell}",
                                             inputs=x, batch_size=len(x))
    print("\nmax |output in the padded batch - output of the word alone|:")
    print_summary(("cell", "word", "length", "masked: last real step",
                   "masked: last padded step", "no mask: last padded step"), rows, parity_rows)


if __name__ == "__main__":
    main()

# Expected output: with masking both columns are 0 (or float noise, below 1e-6) for every word
# and cell; without masking every word shorter than 13 is off (by 0.04 to 1.1 here).
