"""hihello: teach an RNN to answer `hihell` with `ihello`, one character ahead.

The lecture's first character model (S1 lab 12-1, P2 lab 11-1). Two variants:
- "dense" (the TF lecture): RNN(5) -> Dense(5, softmax), Adam 0.1, 50 steps.
- "logits" (the PyTorch lecture): RNN with hidden size = vocabulary size (5), its outputs used
  directly as logits, Adam 0.1, 100 steps. tanh bounds those logits to [-1, 1], so the model
  cannot be confident; the PyTorch lecture itself ends on `ilello`.

Run:  python examples/hihello.py [--cell lstm] [--export out/] [--save models/]
"""

import argparse
from pathlib import Path

from lecture import export_lecture_model, print_summary

from keras_rnn import CELLS, Vocabulary, build_model, datasets, seed_everything, train
from keras_rnn.sample import decode_predictions

## Setup
LEARNING_RATE = 0.1
STEPS = {"dense": 50, "logits": 100}
SEED = 0


## Data
def data():
    source, target = datasets.HIHELLO
    vocabulary = Vocabulary.from_texts(source + target)  # e, h, i, l, o
    x = vocabulary.one_hot(source)[None]  # (1, 6, 5)
    y = vocabulary.encode(target)[None]  # (1, 6)
    return vocabulary, x, y


## Model and training
def run(cell: str, variant: str = "dense", *, steps: int | None = None, verbose: bool = True):
    """Trains one model; returns a dict with the model, the final prediction and the first
    step at which it predicted `ihello`."""
    vocabulary, x, y = data()
    seed_everything(SEED)
    size = len(vocabulary)
    model = build_model(
        cell=cell, input_size=size, hidden_size=size, seq_len=x.shape[1],
        output_size=size if variant == "dense" else None, name=f"hihello_{cell}_{variant}",
    )
    if verbose and variant == "dense":
        model.summary()
    target = datasets.HIHELLO[1]
    steps = steps or STEPS[variant]
    first_correct = shown = None

    def report(step, loss, predictions):
        nonlocal first_correct, shown
        text = decode_predictions(vocabulary, predictions)[0]
        if text == target and first_correct is None:
            first_correct = step
        if verbose and (text != shown or step == steps):  # the prediction as it changes
            print(f"{cell:>10} {variant:>6} step {step:3d}  loss {loss:.4f}  prediction: {text}")
            shown = text

    train(model, x, y, epochs=steps, learning_rate=LEARNING_RATE,
          from_logits=variant == "logits", report=report)
    final = decode_predictions(vocabulary, model.predict_on_batch(x))[0]
    return {"model": model, "vocabulary": vocabulary, "x": x, "prediction": final,
            "first_correct": first_correct}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--variant", choices=("dense", "logits", "both"), default="both")
    parser.add_argument("--export", metavar="DIR", help="export the dense models to TFLite "
                        "and ONNX in DIR and print the parity table")
    parser.add_argument("--save", metavar="DIR", help="save each trained dense model as "
                        "DIR/hihello_CELL.keras (then: python -m export DIR/hihello_gru.keras)")
    args = parser.parse_args()
    variants = ("dense", "logits") if args.variant == "both" else (args.variant,)
    rows, parity_rows = [], []
    for cell in [args.cell] if args.cell else CELLS:
        for variant in variants:
            result = run(cell, variant)
            rows.append((cell, variant, STEPS[variant], result["prediction"],
                         result["first_correct"] or "never"))
            if args.save and variant == "dense":
                Path(args.save).mkdir(parents=True, exist_ok=True)
                result["model"].save(Path(args.save) / f"hihello_{cell}.keras")
            if args.export and variant == "dense":
                parity_rows += export_lecture_model(result, args.export, f"hihello_{cell}",
                                                    task="hihello")
    print_summary(("cell", "variant", "steps", "final prediction", "first ihello at step"),
                  rows, parity_rows)


if __name__ == "__main__":
    main()

# Expected output (seed 0, CPU), the summary table:
# cell        variant  steps  final prediction  first ihello at step
# ----------  -------  -----  ----------------  --------------------
# simple_rnn  dense    50     ihello            9
# simple_rnn  logits   100    ioello            8
# lstm        dense    50     ihello            8
# lstm        logits   100    ihello            41
# gru         dense    50     ihello            8
# gru         logits   100    ihello            74
