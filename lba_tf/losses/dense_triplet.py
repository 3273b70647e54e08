"""Dense triplet loss between a feature map and its positive and negative reconstructions."""

from __future__ import annotations

import tensorflow as tf

REDUCTIONS = ("paper", "official")


def pairwise_distance(x: tf.Tensor, y: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
    """Euclidean distance over the channel axis, ``||x - y + eps||_2`` as torch computes it.

    Args:
        x: ``[..., C]`` float tensor.
        y: ``[..., C]`` float tensor of the same shape.
        eps: added to the difference before the norm (torch's ``pairwise_distance`` default),
            which also keeps the gradient finite when ``x == y``.

    Returns:
        ``[...]`` distances.
    """
    difference = x - y + eps
    return tf.sqrt(tf.reduce_sum(tf.square(difference), axis=-1))


def dense_triplet_loss(
    anchor: tf.Tensor,
    positive: tf.Tensor,
    negative: tf.Tensor,
    comask: tf.Tensor,
    margin: float = 0.3,
    reduction: str = "official",
) -> tf.Tensor:
    """Co-attention weighted triplet hinge at every position of a feature map.

    At each image ``n`` and position ``p``::

        h(n, p) = max(0, margin + d(anchor, positive) - d(anchor, negative))

    with ``d`` the channel-wise distance of ``pairwise_distance``. Computed in float32 whatever
    the input dtype.

    Args:
        anchor: ``[N, H, W, C]`` query feature maps ``F_q``.
        positive: ``[N, H, W, C]`` reconstructions from the positive targets ``R+``.
        negative: ``[N, H, W, C]`` reconstructions from the negative targets ``R-``.
        comask: ``[N, H, W]`` co-attention weights ``c`` (the caller stops their gradient).
        margin: hinge margin.
        reduction: ``"official"`` (the recipe's): the value of the released code, where an
            ``[N, 1, H, W]`` mask times an ``[N, H, W]`` loss broadcasts to ``[N, N, H, W]``:
            the mean over positions of ``mean_n c(n, p) * mean_n h(n, p)``. ``"paper"``: mean
            over images and positions of ``c * h``.

    Returns:
        A float32 scalar.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    anchor, positive, negative, comask = (tf.cast(t, tf.float32) for t in (anchor, positive, negative, comask))
    hinge = tf.nn.relu(margin + pairwise_distance(anchor, positive) - pairwise_distance(anchor, negative))
    if reduction == "paper":
        return tf.reduce_mean(comask * hinge)
    return tf.reduce_mean(tf.reduce_mean(comask, axis=0) * tf.reduce_mean(hinge, axis=0))
