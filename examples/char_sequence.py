"""char sequence: predict each next character of " if you want you" (S1 lab 12-2, 12-3).

x = the sentence without its last character, y = without its first (15 steps, 10 symbols);
LSTM(10) -> Dense(10, softmax), Adam 0.1, 50 steps. Then the lecture's baseline: a softmax
over each character alone, with no RNN. It cannot tell the `y` of "you" from the `y` before it
(" y" -> "o" and "u" -> " "/"y"...), and stays at `yf you yant you`: context needs an RNN.

Run:  python examples/char_sequence.py [--cell gru] [--export out/]
"""

import argparse

from lecture import export_lecture_model, print_summary

from keras_rnn import CELLS, Vocabulary, build_model, datasets, save_model, seed_everything, train
from keras_rnn.sample import decode_predictions

## Setup
HIDDEN = 10
LEARNING_RATE = 0.1
STEPS = 50
BASELINE_STEPS = 3000
SEED = 0


## Data
def data():
    sentence = datasets.CHAR_SEQUENCE
    vocabulary = Vocabulary.from_texts(sentence)
    x = vocabulary.one_hot(sentence[:-1])[None]  # (1, 15, 10)
    y = vocabulary.encode(sentence[1:])[None]  # (1, 15)
    return vocabulary, x, y


def _trainer(vocabulary, label, steps, verbose, report_every):
    target = datasets.CHAR_SEQUENCE[1:]
    state = {"first_correct": None}

    def report(step, loss, predictions):
        text = decode_predictions(vocabulary, predictions)[0]
        if text == target and state["first_correct"] is None:
            state["first_correct"] = step
        if verbose and (step % report_every == 0 or step == steps):
            print(f"{label:>10} step {step:4d}  loss {loss:.4f}  prediction: {text!r}")

    return report, state


## Model and training
def run(cell: str, *, steps: int = STEPS, verbose: bool = True) -> dict:
    vocabulary, x, y = data()
    seed_everything(SEED)
    model = build_model(cell=cell, input_size=len(vocabulary), hidden_size=HIDDEN,
                        output_size=len(vocabulary), seq_len=x.shape[1],
                        name=f"char_sequence_{cell}")
    if verbose:
        model.summary()  # the layers and shapes the lecture shows
    report, state = _trainer(vocabulary, cell, steps, verbose, report_every=5)
    train(model, x, y, epochs=steps, learning_rate=LEARNING_RATE, report=report)
    prediction = decode_predictions(vocabulary, model.predict_on_batch(x))[0]
    return {"model": model, "vocabulary": vocabulary, "x": x, "prediction": prediction,
            "first_correct": state["first_correct"]}


def run_baseline(*, steps: int = BASELINE_STEPS, verbose: bool = True) -> dict:
    """The softmax-only model: each step sees only its own character."""
    import keras

    vocabulary, x, y = data()
    seed_everything(SEED)
    model = keras.Sequential([keras.Input(x.shape[1:]),
                              keras.layers.Dense(len(vocabulary), activation="softmax")])
    report, state = _trainer(vocabulary, "softmax", steps, verbose, report_every=500)
    train(model, x, y, epochs=steps, learning_rate=LEARNING_RATE, report=report,
          report_every=500)
    prediction = decode_predictions(vocabulary, model.predict_on_batch(x))[0]
    return {"prediction": prediction, "first_correct": state["first_correct"]}


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
        rows.append((cell, STEPS, repr(result["prediction"]), result["first_correct"] or "never"))
        if args.export:
            parity_rows += export_lecture_model(result, args.export, f"char_sequence_{cell}",
                                                task="char_sequence")
    baseline = run_baseline()
    rows.append(("softmax only", BASELINE_STEPS, repr(baseline["prediction"]),
                 baseline["first_correct"] or "never"))
    print_summary(("model", "steps", "final prediction", "first correct at step"), rows, parity_rows)


if __name__ == "__main__":
    main()

# Expected output (seed 0, CPU), the summary table:
# model         steps  final prediction   first correct at step
# ------------  -----  -----------------  ---------------------
# simple_rnn    50     'if you want you'  6
# lstm          50     'if you want you'  12
# gru           50     'if you want you'  9
# softmax only  3000   'yf you yant you'  never
