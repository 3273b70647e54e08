"""Identity loss: a two-class case by hand and NumPy parity."""

import numpy as np
import tensorflow as tf

from lba_tf.losses.identity import identity_loss
from tests.numpy_reference import losses as reference


def test_two_class_case():
    # Logits (0, ln 3): softmax (1/4, 3/4). Labels 1 and 0 cost ln(4/3) and ln(4).
    logits = tf.constant([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    loss = identity_loss(logits, tf.constant([1, 0]))
    np.testing.assert_allclose(loss.numpy(), (np.log(4.0 / 3.0) + np.log(4.0)) / 2, rtol=1e-6)


def test_matches_numpy_reference_in_float32_from_half_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(12, 7)).astype(np.float16)
    labels = rng.integers(0, 7, size=12)
    loss = identity_loss(tf.constant(logits), tf.constant(labels))
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), reference.identity_loss(logits, labels), rtol=1e-5)
