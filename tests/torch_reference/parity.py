"""Comparison helpers for the parity tests (NumPy only)."""

import numpy as np

TOLERANCE = 1e-4  # max |actual - expected| relative to max |expected|, float32


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / max |expected|`` over all elements."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def nhwc(tensor) -> np.ndarray:
    """A torch ``[N, C, H, W]`` tensor as a NumPy ``[N, H, W, C]`` array."""
    return np.transpose(tensor.detach().cpu().numpy(), (0, 2, 3, 1))


def l2_normalize(features) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return features / np.linalg.norm(features, axis=-1, keepdims=True)
