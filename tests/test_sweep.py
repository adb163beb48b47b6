"""Property-based parity: seeded random model configurations (`tests/sweep.py`) exported to both
formats and compared with Keras in LiteRT and ONNX Runtime. `benchmarks/parity_sweep.py` runs
the same generator over many more seeds and prints the failure rate."""

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sweep import bound, check_case, random_case

from export.parity.tolerances import ONNX_TOLERANCE, TFLITE_TOLERANCE


@pytest.mark.slow
@settings(max_examples=12, derandomize=True, deadline=None, database=None)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_random_configurations_match_keras_in_both_runtimes(seed):
    case = random_case(seed)
    with tempfile.TemporaryDirectory() as directory:
        result = check_case(case, directory)
    # every case is compared: NaN-aware, and relative to the outputs' magnitude beyond
    # sweep.OVERFLOW (float32 differences scale with it)
    assert result["onnx"] <= bound(ONNX_TOLERANCE, result), (seed, case.description, result)
    assert result["tflite"] <= bound(TFLITE_TOLERANCE, result), (seed, case.description, result)
