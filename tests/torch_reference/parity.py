"""Comparison helpers for the parity tests (NumPy only)."""

import numpy as np

TOLERANCE = 2e-5
"""Largest ``relative_error`` of a float32 forward pass (activations, pooled features, BNNeck
outputs, logits) against the same network in float64.

Measured with oneDNN off and on, for the ResNet-18/34/50 bodies (widths 8 and 16, 64 x 32 and
70 x 35 inputs), the LbA import and the two-stream encoder: in inference Keras was off by up
to 1.1e-6 and the reference itself run in float32 by 1.2e-6 (~20 u, with float32's unit
roundoff u = 2**-24 = 6e-8); with training-mode BatchNorm over 4 images (ResNet-50 width 8,
each residual branch's last scale shrunk to 0.2, ``resnet.shrink_residual_branches_``) by
1.2e-6 and 1.3e-6. Keras against a float32 reference (two float32 errors) differed by at most
1.4e-6. The tolerance is about 10x the largest, for the other summation orders of a correct
float32 implementation. Cases must be well conditioned for it to hold: with the
branch scales near 1, training-mode BatchNorm amplifies rounding along the growing residual
stream, and torch float32 itself is off by 3e-5 (~500 u) in layer4.
"""


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
