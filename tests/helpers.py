"""Test helpers shared by the test modules (not part of the library)."""

import numpy as np


def assert_outputs_close(name: str, actual, expected, tolerance: float) -> None:
    """Test helper: shape, dtype kind and values, with the max abs difference in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.dtype.kind != expected.dtype.kind:
        raise AssertionError(f"{name}: dtype {actual.dtype} != expected {expected.dtype}")
    difference = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=0, atol=tolerance,
        err_msg=f"{name}: max abs difference {difference:.3g} > tolerance {tolerance:g}",
    )
