"""long sentence: learn a 180-character sentence from windows of 10 (S1 lab 12-4).

Every window of 10 characters (stride 1, 170 of them) predicts the same window shifted by one.
2 stacked LSTM(25) -> Dense(25, softmax), Adam 0.1, 500 steps. Reading the predictions back
(the first window whole, then the last character of each next one) rebuilds the sentence
from its second character on. The first predicted character follows a lone `i`, which the
sentence continues with f, p, m, s or n: no model can know which, so, as in the lecture, every
character is right except that first one.

Run:  python examples/long_sentence.py [--cell gru] [--export out/]
"""

import argparse

import numpy as np
from lecture import export_lecture_model, print_summary

from keras_rnn import CELLS, Vocabulary, build_model, datasets, save_model, seed_everything, train
from keras_rnn.sample import decode_predictions

## Setup
WINDOW = 10
HIDDEN = 25
LAYERS = 2
LEARNING_RATE = 0.1
STEPS = 500
CHECK_EVERY = 10  # steps between checks of the reconstruction
SEED = 0


## Data
def data():
    sentence = datasets.LONG_SENTENCE
    vocabulary = Vocabulary.from_texts(sentence)
    inputs, targets = datasets.windows(sentence, WINDOW)
    x = np.stack([vocabulary.one_hot(window) for window in inputs])  # (170, 10, 25)
    y = np.stack([vocabulary.encode(window) for window in targets])  # (170, 10)
    return vocabulary, x, y


def reconstruct(vocabulary, predictions) -> str:
    """The first predicted window, then the last character of every following one."""
    windows = decode_predictions(vocabulary, predictions)
    return windows[0] + "".join(window[-1] for window in windows[1:])


def wrong_characters(text: str) -> int:
    """Characters of the reconstruction that differ from the sentence, after the first."""
    target = datasets.LONG_SENTENCE[1:]
    return sum(a != b for a, b in zip(text[1:], target[1:])) + abs(len(text) - len(target))


## Model and training
def run(cell: str, *, steps: int = STEPS, verbose: bool = True) -> dict:
    vocabulary, x, y = data()
    seed_everything(SEED)
    model = build_model(cell=cell, input_size=len(vocabulary), hidden_size=HIDDEN,
                        num_layers=LAYERS, output_size=len(vocabulary), seq_len=WINDOW,
                        name=f"long_sentence_{cell}")
    if verbose:
        model.summary()  # the layers and shapes the lecture shows
    state = {"first_correct": None}

    def report(step, loss, predictions):
        text = reconstruct(vocabulary, predictions)
        if wrong_characters(text) == 0 and state["first_correct"] is None:
            state["first_correct"] = step
        if verbose and step % 50 == 0:
            print(f"{cell:>10} step {step:3d}  loss {loss:.4f}  {text[:60]!r}...")

    train(model, x, y, epochs=steps, learning_rate=LEARNING_RATE, report=report,
          report_every=CHECK_EVERY)
    text = reconstruct(vocabulary, model.predict_on_batch(x))
    if verbose:
        print(f"{cell:>10} reconstructed: {text!r}")
    return {"model": model, "vocabulary": vocabulary, "x": x, "reconstructed": text,
            "first_correct": state["first_correct"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--export", metavar="DIR", help="export to TFLite and ONNX in DIR")
    parser.add_argument("--save", metavar="DIR", help="save each trained model as "
                        "DIR/NAME.keras (then: python -m export DIR/NAME.keras)")
    args = parser.parse_args()
    rows, parity_rows = [], []
    for cell in [args.cell] if args.cell else CELLS:
        result = run(cell, steps=args.steps)
        if args.save:
            save_model(result["model"], args.save)
        rows.append((cell, args.steps, result["reconstructed"][0],
                     wrong_characters(result["reconstructed"]), result["first_correct"] or "never"))
        if args.export:
            parity_rows += export_lecture_model(result, args.export, f"long_sentence_{cell}",
                                                task="long_sentence")
    print_summary(("cell", "steps", "first char", "wrong after it", "exact from step"), rows, parity_rows)


if __name__ == "__main__":
    main()

# Expected output (seed 0, CPU), the summary table:
# cell        steps  first char  wrong after it  exact from step
# ----------  -----  ----------  --------------  ---------------
# simple_rnn  500    f           0               60
# lstm        500    l           0               60
# gru         500    p           0               40
