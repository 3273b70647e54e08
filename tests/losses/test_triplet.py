"""Batch-hard triplet loss: four points with known distances, NumPy parity, safe gradients."""

import numpy as np
import tensorflow as tf

from lba_tf.losses.triplet import batch_hard_triplet_loss, euclidean_distances, triplet_accuracy
from tests.numpy_reference import losses as reference

# Identity 0 at (0, 0), (0, 3); identity 1 at (2, 0), (6, 3). Distances: within 0: 3, within 1:
# 5; across: (0,0)-(2,0) = 2, (0,0)-(6,3) = sqrt(45), (0,3)-(2,0) = sqrt(13), (0,3)-(6,3) = 6.
POINTS = tf.constant([[0.0, 0.0], [0.0, 3.0], [2.0, 0.0], [6.0, 3.0]])
LABELS = tf.constant([0, 0, 1, 1])


def test_distances_of_four_points():
    expected = [
        [0.0, 3.0, 2.0, np.sqrt(45.0)],
        [3.0, 0.0, np.sqrt(13.0), 6.0],
        [2.0, np.sqrt(13.0), 0.0, 5.0],
        [np.sqrt(45.0), 6.0, 5.0, 0.0],
    ]
    distances = euclidean_distances(POINTS).numpy()
    np.testing.assert_allclose(distances, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.diag(distances), 1e-6, rtol=1e-3)  # sqrt of the 1e-12 clamp


def test_loss_on_four_points():
    # d_ap = (3, 3, 5, 5), d_an = (2, sqrt(13), 2, 6): hinges 1.3, 0, 3.3, 0.
    loss = batch_hard_triplet_loss(POINTS, LABELS, margin=0.3)
    np.testing.assert_allclose(loss.numpy(), (1.3 + 3.3) / 4, rtol=1e-6)
    np.testing.assert_allclose(triplet_accuracy(POINTS, LABELS).numpy(), 0.5)


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    features = np.maximum(rng.normal(size=(16, 32)), 0.0) * 3.0
    labels = np.repeat(np.arange(4), 4)
    expected, d_ap, d_an = reference.batch_hard_triplet(features, labels, margin=0.3)
    got = batch_hard_triplet_loss(tf.constant(features, tf.float32), tf.constant(labels))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    accuracy = triplet_accuracy(tf.constant(features, tf.float32), tf.constant(labels))
    np.testing.assert_allclose(accuracy.numpy(), np.mean(d_an >= d_ap))


def test_gradient_is_finite_for_duplicate_embeddings():
    features = tf.constant([[1.0, 2.0], [1.0, 2.0], [1.5, 2.0], [0.0, 0.0]])
    labels = tf.constant([0, 0, 1, 1])
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = batch_hard_triplet_loss(features, labels)
    gradient = tape.gradient(loss, features).numpy()
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)
