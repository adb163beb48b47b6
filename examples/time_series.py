"""time series: predict tomorrow's closing price from the last 7 days (S1 lab 12-5).

Many-to-one regression: windows of 7 days x 5 features (Open, High, Low, Volume, Close),
min-max scaled (over the whole series, as the lecture does) -> LSTM(10) -> Dense(1) on the last
step -> the next day's Close. Adam 0.01, MSE, 500 full-batch steps; the first 70% of windows
train, the last 30% (later in time) test. Prints train MSE and test RMSE (scaled), next to the
naive "tomorrow = today" forecast, and saves a plot of test prediction vs truth.

Data: `--csv PATH` reads the lecture's file format (`#` comment lines; columns Open, High, Low,
Volume, Close; newest row first). Without it: the real daily GOOG prices 2004-2013 that the
`backtesting` package ships (read offline from its installed files).

Run:  python examples/time_series.py [--cell gru] [--csv data.csv] [--plot-dir out/]
"""

import argparse
from pathlib import Path

import numpy as np
from lecture import export_lecture_model, print_summary

from keras_rnn import CELLS, build_model, datasets, save_model, seed_everything, train

## Setup
WINDOW = 7
HIDDEN = 10
LEARNING_RATE = 0.01
STEPS = 500
TRAIN_SHARE = 0.7
SEED = 0


## Data
def data(csv=None):
    series = datasets.load_stock_csv(csv) if csv else datasets.load_packaged_stock()
    scaled = datasets.min_max_scale(series.values)
    x, y = datasets.stock_windows(scaled, WINDOW)  # (n, 7, 5), (n, 1)
    split = int(len(x) * TRAIN_SHARE)
    return series, (x[:split], y[:split]), (x[split:], y[split:])


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


## Model and training
def run(cell: str, *, csv=None, steps: int = STEPS, plot_dir=None, verbose: bool = True) -> dict:
    series, (x_train, y_train), (x_test, y_test) = data(csv)
    seed_everything(SEED)
    model = build_model(cell=cell, input_size=x_train.shape[2], hidden_size=HIDDEN,
                        return_sequences=False, output_size=1, output_activation="linear",
                        seq_len=WINDOW, name=f"time_series_{cell}")
    if verbose:
        model.summary()  # the layers and shapes the lecture shows

    def report(step, loss, predictions):
        if verbose:
            print(f"{cell:>10} step {step:3d}  train MSE {loss:.6f}")

    losses = train(model, x_train, y_train, epochs=steps, learning_rate=LEARNING_RATE,
                   loss="mse", report=report, report_every=100)
    predicted = np.asarray(model.predict_on_batch(x_test))
    result = {
        "model": model, "x_test": x_test, "source": series.source,
        "train_mse": float(np.mean((model.predict_on_batch(x_train) - y_train) ** 2)),
        "test_rmse": rmse(predicted, y_test),
        # tomorrow's Close = today's Close (the last step's last feature)
        "naive_rmse": rmse(x_test[:, -1, -1:], y_test),
        "final_loss": losses[-1],
    }
    if plot_dir is not None:
        result["plot"] = plot(Path(plot_dir) / f"time_series_{cell}.png", y_test, predicted,
                              f"{cell}: test prediction vs truth ({series.source})")
    if verbose:
        print(f"{cell:>10} test RMSE {result['test_rmse']:.4f} "
              f"(tomorrow = today: {result['naive_rmse']:.4f})")
    return result


def plot(path: Path, truth, predicted, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.plot(truth, label="truth (scaled Close)")
    axes.plot(predicted, label="prediction")
    axes.set_xlabel("test day")
    axes.set_ylabel("Close, min-max scaled")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, help="one cell (default: all three)")
    parser.add_argument("--csv", help="a stock CSV in the lecture's format")
    parser.add_argument("--plot-dir", default="out", help="where the PNG plots go")
    parser.add_argument("--export", metavar="DIR", help="export to TFLite and ONNX in DIR")
    parser.add_argument("--save", metavar="DIR", help="save each trained model as "
                        "DIR/NAME.keras (then: python -m export DIR/NAME.keras)")
    args = parser.parse_args()
    rows, parity_rows = [], []
    for cell in [args.cell] if args.cell else CELLS:
        try:
            result = run(cell, csv=args.csv, plot_dir=args.plot_dir)
            if args.save:
                save_model(result["model"], args.save)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        rows.append((cell, STEPS, f"{result['train_mse']:.5f}", f"{result['test_rmse']:.4f}",
                     f"{result['naive_rmse']:.4f}", result["plot"]))
        if args.export:
            parity_rows += export_lecture_model({"model": result["model"], "x": result["x_test"]},
                                                args.export, f"time_series_{cell}",
                                                task="time_series")
    print_summary(("cell", "steps", "train MSE", "test RMSE", "naive RMSE", "plot"), rows,
                  parity_rows)


if __name__ == "__main__":
    main()

# Expected output (seed 0, CPU, the packaged GOOG series), the summary table:
# cell        steps  train MSE  test RMSE  naive RMSE  plot
# simple_rnn  500    0.00036    0.0224     0.0138      out/time_series_simple_rnn.png
# lstm        500    0.00036    0.0236     0.0138      out/time_series_lstm.png
# gru         500    0.00022    0.0171     0.0138      out/time_series_gru.png
