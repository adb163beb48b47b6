"""How `jax_backend_bigru.keras` and `jax_backend_bigru.expected.npy` were written: under the JAX
backend (keras 3.15.1, jax 0.10.2, in a venv of their own; this project does not install JAX),
the expected outputs computed by JAX. Run there: `python make_jax_backend_model.py`.
(Nothing runs on import: the test collection imports every module.)
"""

import os


def main():
    os.environ["KERAS_BACKEND"] = "jax"  # before Keras is first imported
    import keras
    import numpy as np

    keras.utils.set_random_seed(3)
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(40, 8, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=True))(x)
    x = keras.layers.LSTM(5)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    for layer in model.layers:  # nonzero biases: a file that ran the padding would show it
        for weight in layer.weights:
            if "bias" in weight.path:
                weight.assign(np.random.default_rng(0).uniform(-0.5, 0.5, weight.shape)
                              .astype("float32"))
    ids = np.array([[0, 0, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0], [1, 2, 0, 3, 4, 39]], np.int32)
    np.save("jax_backend_bigru.expected.npy", np.asarray(model(ids)))
    model.save("jax_backend_bigru.keras")


if __name__ == "__main__":
    main()
