"""word sentiment: classify a word as good (1) or bad (0) from its characters (T2 lab 12-3).

Many-to-one: `good`, `bad`, `worse`, `so good` -> 1, 0, 0, 1. Characters become ids, padded at
the end to 10 with `<pad>` (id 0), then a fixed one-hot Embedding with mask_zero (the padding is
skipped) -> SimpleRNN(10) -> Dense(2, softmax). Adam 0.01, 30 epochs, batch 2.

Run:  python examples/sentiment.py [--cell gru] [--export out/]
"""

import argparse

import numpy as np
from lecture import export_lecture_model, print_summary

from keras_rnn import CELLS, Vocabulary, build_model, datasets, save_model, seed_everything, train

## Setup
HIDDEN = 10
LEARNING_RATE = 0.01
EPOCHS = 30
BATCH = 2
SEED = 0


## Data
def data():
    words = datasets.SENTIMENT_WORDS
    vocabulary = Vocabulary.from_texts(words, pad=True)  # <pad>, ' ', a, b, d, e, g, o, r, s, w
    x = vocabulary.encode_batch(words, length=datasets.SENTIMENT_LENGTH)  # (4, 10) ids
    y = np.asarray(datasets.SENTIMENT_LABELS, np.int32)  # (4,)
    return vocabulary, x, y


## Model and training
def run(cell: str, *, epochs: int = EPOCHS, verbose: bool = True) -> dict:
    vocabulary, x, y = data()
    seed_everything(SEED)
    model = build_model(cell=cell, inputs="ids", input_size=len(vocabulary), hidden_size=HIDDEN,
                        mask_zero=True, return_sequences=False, output_size=2,
                        seq_len=datasets.SENTIMENT_LENGTH, name=f"sentiment_{cell}")
    if verbose:
        model.summary()  # the layers and shapes the lecture shows

    def report(step, loss, predictions):
        accuracy = float((predictions.argmax(-1) == y).mean())
        if verbose and step % 5 == 0:
            print(f"{cell:>10} epoch {step:2d}  loss {loss:.4f}  accuracy {accuracy:.0%}")

    train(model, x, y, epochs=epochs, learning_rate=LEARNING_RATE, batch_size=BATCH,
          report=report)
    predicted = model.predict_on_batch(x).argmax(-1)
    accuracy = float((predicted == y).mean())
    if verbose:
        for word, label in zip(datasets.SENTIMENT_WORDS, predicted):
            print(f"{cell:>10} {word!r:>10} -> {'good' if label else 'bad'}")
    return {"model": model, "vocabulary": vocabulary, "x": x, "y": y, "accuracy": accuracy}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--export", metavar="DIR", help="export to TFLite and ONNX in DIR")
    parser.add_argument("--save", metavar="DIR", help="save each trained model as "
                        "DIR/NAME.keras (then: python -m export DIR/NAME.keras)")
    args = parser.parse_args()
    rows, parity_rows = [], []
    for cell in [args.cell] if args.cell else CELLS:
        result = run(cell)
        if args.save:
            save_model(result["model"], args.save)
        rows.append((cell, EPOCHS, f"{result['accuracy']:.0%}"))
        if args.export:
            parity_rows += export_lecture_model(result, args.export, f"sentiment_{cell}",
                                                task="sentiment",
                                             labels="bad,good")
    print_summary(("cell", "epochs", "training accuracy"), rows, parity_rows)


if __name__ == "__main__":
    main()

# Expected output, the summary table: 100% training accuracy for every cell.
