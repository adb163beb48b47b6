"""The RNN lectures (vanilla RNN, LSTM, GRU) rebuilt in Keras 3.

Importing this package does not import TensorFlow: `build_model`, `train` and friends import
Keras when called, so `keras_rnn.Vocabulary` also serves TF-free code on a device.
"""

from keras_rnn import datasets
from keras_rnn.models import RNNConfig, build_model
from keras_rnn.train import seed_everything, train
from keras_rnn.vocab import Vocabulary

__all__ = ["build_model", "datasets", "RNNConfig", "seed_everything", "train", "Vocabulary"]
