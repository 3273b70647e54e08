"""Dense triplet loss: hand-computed hinges, both reductions against NumPy and torch."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.losses.dense_triplet import dense_triplet_loss, pairwise_distance
from tests.numpy_reference import alignment as reference


def _random_maps(rng, n=6, h=6, w=3, c=32):
    anchor, positive, negative = (np.maximum(rng.normal(size=(n, h, w, c)), 0.0) for _ in range(3))
    comask = rng.uniform(size=(n, h, w))
    return anchor, positive, negative, comask


def test_distance_adds_eps_to_the_difference():
    zeros = tf.zeros([2, 4])
    np.testing.assert_allclose(pairwise_distance(zeros, zeros).numpy(), [2e-6, 2e-6], rtol=1e-6)
    x = tf.constant([[3.0, 0.0]])
    y = tf.constant([[0.0, 4.0]])
    # sqrt((3 + 1e-6)^2 + (-4 + 1e-6)^2) = 5 - 1e-6 / 5 to first order.
    np.testing.assert_allclose(pairwise_distance(x, y).numpy(), [5.0 - 2e-7], rtol=1e-7)


def test_hinge_on_two_dimensional_toy_vectors():
    # Position 0: d(a, p) = 0.5, d(a, n) = 1.0 -> hinge max(0, 0.3 + 0.5 - 1.0) = 0.
    # Position 1: d(a, p) = 1.0, d(a, n) = 0.5 -> hinge 0.3 + 1.0 - 0.5 = 0.8.
    anchor = tf.constant([[[[0.0, 0.0], [1.0, 1.0]]]])
    positive = tf.constant([[[[0.3, 0.4], [1.0, 2.0]]]])
    negative = tf.constant([[[[0.6, 0.8], [1.0, 1.5]]]])
    comask = tf.constant([[[1.0, 0.5]]])
    loss = dense_triplet_loss(anchor, positive, negative, comask)
    np.testing.assert_allclose(loss.numpy(), (1.0 * 0.0 + 0.5 * 0.8) / 2, rtol=1e-5)
    unweighted = dense_triplet_loss(anchor, positive, negative, tf.ones([1, 1, 2]))
    np.testing.assert_allclose(unweighted.numpy(), 0.4, rtol=1e-5)


def test_official_reduction_multiplies_image_means():
    # Two 1x1 images with hinges 0.8 and 0: the co-attention sits on the image without loss.
    anchor = tf.zeros([2, 1, 1, 2])
    positive = tf.constant([[[[1.0, 0.0]]], [[[0.1, 0.0]]]])
    negative = tf.constant([[[[0.5, 0.0]]], [[[0.9, 0.0]]]])
    comask = tf.constant([[[0.0]], [[1.0]]])
    paper = dense_triplet_loss(anchor, positive, negative, comask, reduction="paper")
    official = dense_triplet_loss(anchor, positive, negative, comask, reduction="official")
    np.testing.assert_allclose(paper.numpy(), 0.0, atol=1e-7)
    # mean(c) * mean(h) = 0.5 * 0.4.
    np.testing.assert_allclose(official.numpy(), 0.2, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["paper", "official"])
def test_matches_numpy_reference(reduction):
    maps = _random_maps(np.random.default_rng(0))
    expected = reference.dense_triplet_loss(*maps, margin=0.3, reduction=reduction)
    got = dense_triplet_loss(*(tf.constant(m, tf.float32) for m in maps), reduction=reduction)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.torch
def test_official_reduction_matches_torch_broadcast():
    torch = pytest.importorskip("torch")
    anchor, positive, negative, comask = _random_maps(np.random.default_rng(1), n=5, h=18, w=9, c=8)
    a, p, n = (torch.from_numpy(x.transpose(0, 3, 1, 2)) for x in (anchor, positive, negative))
    # TripletMarginLoss(margin=0.3, p=2, reduction="none") with the distance over channels.
    d_ap = torch.norm(a - p + 1e-6, p=2, dim=1)
    d_an = torch.norm(a - n + 1e-6, p=2, dim=1)
    hinge = torch.clamp(0.3 + d_ap - d_an, min=0.0)
    weighted = torch.from_numpy(comask)[:, None] * hinge
    assert weighted.shape == (5, 5, 18, 9)
    expected = torch.mean(weighted).item()
    got = dense_triplet_loss(anchor, positive, negative, comask, reduction="official")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_half_precision_inputs_give_float32_loss():
    maps = _random_maps(np.random.default_rng(2))
    half = [tf.constant(m, tf.float16) for m in maps]
    upcast = [tf.cast(m, tf.float32) for m in half]
    loss = dense_triplet_loss(*half)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), dense_triplet_loss(*upcast).numpy(), rtol=1e-6)


def test_unknown_reduction_is_rejected():
    maps = [tf.zeros([1, 1, 1, 2])] * 3 + [tf.zeros([1, 1, 1])]
    with pytest.raises(ValueError, match="reduction"):
        dense_triplet_loss(*maps, reduction="sum")
