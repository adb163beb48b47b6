"""Property-based parity: seeded random model configurations (`export.sweep`) exported to both
formats and compared with Keras in LiteRT and ONNX Runtime. `benchmarks/parity_sweep.py` runs
the same generator over many more seeds and prints the failure rate."""

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from export.parity import ONNX_TOLERANCE, TFLITE_TOLERANCE
from export.sweep import check_case, random_case


@settings(max_examples=12, derandomize=True, deadline=None, database=None)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_random_configurations_match_keras_in_both_runtimes(seed):
    case = random_case(seed)
    with tempfile.TemporaryDirectory() as directory:
        result = check_case(case, directory)
    if result["overflowing"]:
        return  # outputs beyond export.sweep.OVERFLOW: float32 differences scale with them
    assert result["onnx"] <= ONNX_TOLERANCE, (seed, case.description, result)
    assert result["tflite"] <= TFLITE_TOLERANCE, (seed, case.description, result)
