"""Batch-hard triplet loss on pooled embeddings (Hermans et al., 2017)."""

from __future__ import annotations

import tensorflow as tf


def euclidean_distances(features: tf.Tensor) -> tf.Tensor:
    """All pairwise Euclidean distances ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12))``.

    Args:
        features: ``[N, D]`` embeddings.

    Returns:
        ``[N, N]`` distances; the diagonal is ``1e-6`` (the clamp), not 0.
    """
    squared_norms = tf.reduce_sum(tf.square(features), axis=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * tf.matmul(features, features, transpose_b=True)
    return tf.sqrt(tf.maximum(squared, 1e-12))


def hardest_distances(features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per anchor, the distance to its farthest positive and to its nearest negative.

    Args:
        features: ``[N, D]`` embeddings (computed in float32).
        labels: ``[N]`` integer identities.

    Returns:
        ``(d_ap, d_an)``, each ``[N]``. An anchor is its own positive; an anchor with no
        negative in the batch gets ``d_an = inf``.
    """
    distances = euclidean_distances(tf.cast(features, tf.float32))
    same = tf.equal(labels[:, None], labels[None, :])
    d_ap = tf.reduce_max(tf.where(same, distances, tf.zeros_like(distances)), axis=1)
    infinity = tf.fill(tf.shape(distances), float("inf"))
    d_an = tf.reduce_min(tf.where(same, infinity, distances), axis=1)
    return d_ap, d_an


def batch_hard_triplet_loss(features: tf.Tensor, labels: tf.Tensor, margin: float = 0.3) -> tf.Tensor:
    """Mean over anchors of ``max(0, d_ap - d_an + margin)`` with the hardest pairs in the batch.

    Args:
        features: ``[N, D]`` embeddings (GeM-pooled layer4 features, before the BNNeck).
        labels: ``[N]`` integer identities.
        margin: hinge margin.

    Returns:
        A float32 scalar.
    """
    d_ap, d_an = hardest_distances(features, labels)
    return tf.reduce_mean(tf.nn.relu(d_ap - d_an + margin))


def triplet_accuracy(features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of anchors whose nearest negative is no closer than their farthest positive.

    Args:
        features: ``[N, D]`` embeddings.
        labels: ``[N]`` integer identities.

    Returns:
        A float32 scalar in [0, 1].
    """
    d_ap, d_an = hardest_distances(features, labels)
    return tf.reduce_mean(tf.cast(d_an >= d_ap, tf.float32))
