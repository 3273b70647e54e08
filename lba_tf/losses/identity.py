"""Identity (classification) loss of the re-identification heads."""

from __future__ import annotations

import tensorflow as tf


def identity_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy against integer identities, no label smoothing.

    Args:
        logits: ``[N, num_identities]`` classifier outputs (any float dtype; computed in float32).
        labels: ``[N]`` integer identities in ``[0, num_identities)``.

    Returns:
        A float32 scalar.
    """
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    return tf.reduce_mean(losses)
