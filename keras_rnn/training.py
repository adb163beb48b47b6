"""Seeded, deterministic training on CPU, printing the decoded prediction as training goes."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TensorFlow's ops deterministic: the same
    seed then gives the same initial weights, the same trained weights and the same printed
    predictions on CPU. Call it before `build_model`."""
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    from keras_rnn.quiet import load_tensorflow

    tf = load_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(
    model,
    x,
    y,
    *,
    epochs: int,
    learning_rate: float,
    loss: str = "sparse_categorical_crossentropy",
    from_logits: bool = False,
    batch_size: int | None = None,
    report: Callable[[int, float, np.ndarray], None] | None = None,
    report_every: int = 1,
    stop_when: Callable[[np.ndarray], bool] | None = None,
    callbacks: list | None = None,
    validation_data=None,
    verbose: int = 0,
):
    """Compiles `model` with Adam and trains it, as the lectures do.

    Args:
        model: a Keras model (see `build_model`).
        x, y: training inputs (an array, or a list of arrays for a model with several
            inputs) and targets (class ids for the classification losses).
        epochs: passes over the data; with the default full batch, one step each.
        learning_rate: Adam's learning rate.
        loss: `"sparse_categorical_crossentropy"` or `"mse"`.
        from_logits: the model outputs logits (no softmax), as the PyTorch lecture's RNN.
        batch_size: None for one full batch per step (the TF1 lectures feed everything).
        report: called as `report(step, loss, predictions)` every `report_every` steps, with
            the model's predictions on `x` (from the compiled predict function); the loss is
            the mean over the steps since the last report.
        stop_when: stops training early once `stop_when(predictions)` is true.
        callbacks: more Keras callbacks for `fit` (EarlyStopping, ModelCheckpoint,
            TensorBoard, ...).
        validation_data: passed to `fit` as is: `(x_val, y_val)`.
        verbose: Keras's own progress display (`fit(verbose=...)`): 0 silent (the lecture's
            `report` prints instead), 1 a progress bar, 2 one line per epoch.

    Returns:
        The training loss of each report period (for full-batch training, the mean over the
        `report_every` steps of the period; so one value per step with the default 1), as
        `fit`'s `History.history["loss"]`.
    """
    import keras

    if epochs <= 0:
        raise ValueError(f"`epochs` must be a positive integer, got {epochs!r}.")
    if loss == "sparse_categorical_crossentropy":
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        metrics = ["accuracy"]
    elif loss == "mse":
        loss_fn, metrics = keras.losses.MeanSquaredError(), []
    else:
        raise ValueError(f"Unknown loss {loss!r}: expected 'sparse_categorical_crossentropy' or 'mse'.")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss_fn,
                  metrics=metrics)
    several_inputs = isinstance(x, (list, tuple))  # e.g. seq2seq: [source, decoder input]
    rows = len(x[0]) if several_inputs else len(x)
    full_batch = batch_size is None or batch_size >= rows
    # Full-batch training: one "epoch" of `report_every` identical steps, so Keras's per-epoch
    # overhead (tens of ms) is paid once per report, not once per step.
    steps_per_report = report_every if full_batch else 1

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * steps_per_report
            due = report is not None and (step % report_every == 0 or step == epochs)
            if not due and stop_when is None:
                return
            predictions = np.asarray(self.model.predict_on_batch(x))
            if due:
                report(step, float(logs["loss"]), predictions)
            if stop_when is not None and stop_when(predictions):
                self.model.stop_training = True

    all_callbacks = [_Report()] + list(callbacks or [])
    if full_batch:
        import tensorflow as tf

        if epochs % steps_per_report:
            raise ValueError(f"`epochs` ({epochs}) must be a multiple of report_every "
                             f"({report_every}) for full-batch training.")
        dataset = tf.data.Dataset.from_tensors((tuple(x) if several_inputs else x, y)).repeat()
        history = model.fit(dataset, epochs=epochs // steps_per_report, shuffle=False,
                            steps_per_epoch=steps_per_report, verbose=verbose,
                            callbacks=all_callbacks, validation_data=validation_data)
    else:
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False,
                            verbose=verbose, callbacks=all_callbacks,
                            validation_data=validation_data)
    return history.history["loss"]


def save_model(model, directory):
    """Saves a trained model as `directory/<model.name>.keras` (Keras's own format, which
    `python -m export` reads) and returns the path."""
    from pathlib import Path

    path = Path(directory) / f"{model.name}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path
