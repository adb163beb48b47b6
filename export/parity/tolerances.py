"""The bounds `verify` judges files by, each with the reason and the measurement behind it.
"""

from __future__ import annotations

# ONNX Runtime's RNN/LSTM/GRU kernels and Keras both compute in float32 but sum the matmuls in
# a different order. Measured here: at most 3.6e-7 on the lecture models (the time series
# regression, 7 steps) and 2.4e-7 over the cell x stack x masking sweep of the tests (up to 40
# steps). 1e-5 leaves room for longer sequences while a wrong gate order or weight layout moves
# outputs by far more; Keras's own ONNX export tests use the same bound.
ONNX_TOLERANCE = 1e-5
# TFLite runs FULLY_CONNECTED and its element-wise kernels through XNNPACK, which reorders
# float32 sums and uses its own tanh/logistic approximations. Measured here: at most 3.6e-7 on
# the lecture models. 1e-4 is the bound Keras's LiteRT export tests use for float files.
TFLITE_TOLERANCE = 1e-4
# The bounds above are absolute: an output whose values are all small (a head with small
# weights, a probability near 0) would pass them while wrong (measured: a file exported from
# an unrelated model of the same shape, outputs around 1e-4, 158% off, passed both). So every
# float output must also stay within its own scale: max|diff| <= RELATIVE_FLOOR +
# RELATIVE_TOLERANCE * max|Keras output|. Float32 rounding moves exact exports by about 1e-7
# of the output's scale (measured above on outputs of order 1), so 1e-3 of the scale is 10^4
# times that margin while any other model's output, off by the order of the output itself,
# fails it. The floor: the hidden states (within [-1, 1]) carry float32 rounding of about 1e-7
# per step into any output, however small its scale.
RELATIVE_TOLERANCE = 1e-3
RELATIVE_FLOOR = 1e-6
# A model that computes in half precision (a mixed_float16 / mixed_bfloat16 policy, float16
# layers) is exported computing in float32 (`export.model.signature.float32_twin`), and Keras
# rounds each of its ops' results to the half type: float16 keeps 11 significant bits
# (eps 9.8e-4), bfloat16 8 (eps 7.8e-3), and the rounding adds up over the steps. Measured
# here (12 steps, outputs of order 1): 3.5e-4 to 5.2e-4 for float16 LSTM/GRU, 5.5e-3 for a
# bfloat16 BiGRU. The bounds, absolute and as a share of each output's scale, are about 10 eps:
# room for longer sequences, while another model's outputs, off by their own order, fail.
HALF_PRECISION_TOLERANCE = {"float16": 1e-2, "bfloat16": 8e-2}
# Quantized files (int8 / float16 weights) are not judged on values but on decisions: the
# share of steps whose argmax (predicted class) equals the Keras model's, on the inputs the user
# gave (the calibration data for int8: every decision kept) ...
QUANTIZED_MIN_AGREEMENT = 1.0
# ... and on seeded held-out inputs of the model's kind (random ids, random one-hot steps when
# the given inputs are one-hot, else standard normal features), so that a file calibrated on
# the wrong data cannot pass on its own calibration set. Far below 100%: held-out sequences are
# ones the model never saw, where the int8 ranges calibrated on the training data saturate.
# Measured here on random one-hot sequences for the hihello int8 files (trained on one
# sentence, the worst case): 70% (GRU), 96% (SimpleRNN), 100% (LSTM); the same files calibrated
# on the inputs x 1e30: 13-40%.
HELD_OUT_MIN_AGREEMENT = 0.5
