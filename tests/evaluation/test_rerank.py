"""k-reciprocal re-ranking: parity with a set-based statement of the paper, a hand-worked case,
and invariants."""

import math

import numpy as np
import pytest

from lba_tf.evaluation.rerank import k_reciprocal_rerank


def reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    """Zhong et al. (2017), one sample at a time with Python sets, in float64."""
    d = np.block([[q_q, q_g], [q_g.T, g_g]])
    n = len(d)
    ranked = [sorted(range(n), key=lambda j, i=i: (j != i, d[i, j], j)) for i in range(n)]

    def nearest(i, k):
        return set(ranked[i][: k + 1])

    def reciprocal(i, k):
        return {j for j in nearest(i, k) if i in nearest(j, k)}

    half = round(k1 / 2)
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            r_half = reciprocal(c, half)
            if len(r & r_half) >= 2 / 3 * len(r_half):
                expanded |= r_half
        for j in expanded:
            v[i, j] = math.exp(-d[i, j])
    v = np.array([v[ranked[i][:k2]].mean(axis=0) for i in range(n)])
    num_queries = len(q_g)
    jaccard = np.array(
        [
            [
                1 - np.minimum(v[p], v[num_queries + g]).sum() / np.maximum(v[p], v[num_queries + g]).sum()
                for g in range(q_g.shape[1])
            ]
            for p in range(num_queries)
        ]
    )
    return (1 - lambda_value) * jaccard + lambda_value * q_g


def random_distances(seed, num_queries=7, num_gallery=15, ties=False):
    """Squared Euclidean distances of L2-normalised features, in [0, 4]."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((num_queries + num_gallery, 3))
    if ties:
        feats = np.round(feats)
        feats[np.all(feats == 0, axis=1)] = 1.0
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    d = np.maximum(2.0 - 2.0 * feats @ feats.T, 0.0)
    np.fill_diagonal(d, 0.0)
    return (d[:num_queries, num_queries:], d[:num_queries, :num_queries], d[num_queries:, num_queries:])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k1,k2", [(4, 3), (5, 1), (1, 2), (20, 6)])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_set_based_reference(seed, k1, k2, ties):
    q_g, q_q, g_g = random_distances(seed, ties=ties)
    expected = reference_rerank(q_g, q_q, g_g, k1, min(k2, 22), 0.3)
    np.testing.assert_allclose(k_reciprocal_rerank(q_g, q_q, g_g, k1, k2, 0.3), expected, atol=1e-12, rtol=0)


def test_reciprocal_structure_lifts_true_match():
    # Points on a line, distance |x - y|; one query q = 0. Gallery: d = -0.9 (wrong id) with its
    # own tight group c1 = -1.0, c2 = -1.05; true match t = 0.95; e = 2.5. k1 = 2, k2 = 1.
    # N(q, 2) = {q, d, t}. N(d, 2) = {d, c1, c2} lacks q, so d is not k-reciprocal to q;
    # N(t, 2) = {t, q, e} has q, so R*(q) = {q, t} (the half-size sets add nothing).
    # R*(t) = {t, q, e} (N(e, 2) = {e, t, q}); R*(d) = {d, c1, c2}.
    # V_q = [q: 1, t: e^-0.95], V_t = [q: e^-0.95, t: 1, e: e^-1.55], V_d shares nothing.
    # d_J(q, t) = 1 - 2 e^-0.95 / (2 + e^-1.55); d_J(q, d) = 1.
    # Final: t -> 0.7 d_J(q, t) + 0.3 * 0.95 = 0.7403, d -> 0.7 + 0.3 * 0.9 = 0.97.
    query, gallery = np.array([0.0]), np.array([-0.9, -1.0, -1.05, 0.95, 2.5])
    q_g = np.abs(query[:, None] - gallery[None, :])
    q_q = np.zeros((1, 1))
    g_g = np.abs(gallery[:, None] - gallery[None, :])
    reranked = k_reciprocal_rerank(q_g, q_q, g_g, k1=2, k2=1, lambda_value=0.3)
    assert np.argmin(q_g[0]) == 0  # the distractor first before re-ranking
    assert np.argmin(reranked[0]) == 3  # the true match first after
    jaccard_t = 1 - 2 * math.exp(-0.95) / (2 + math.exp(-1.55))
    assert reranked[0, 3] == pytest.approx(0.7 * jaccard_t + 0.3 * 0.95)
    assert reranked[0, 0] == pytest.approx(0.97)


def test_lambda_one_returns_original_query_gallery_distances():
    q_g, q_q, g_g = random_distances(0)
    np.testing.assert_array_equal(k_reciprocal_rerank(q_g, q_q, g_g, 4, 3, 1.0), q_g)


def test_jaccard_part_is_a_finite_distance_in_unit_range():
    q_g, q_q, g_g = random_distances(1, ties=True)
    jaccard = k_reciprocal_rerank(q_g, q_q, g_g, 4, 3, 0.0)
    assert jaccard.shape == q_g.shape
    assert np.all(np.isfinite(jaccard))
    assert np.all((jaccard >= 0.0) & (jaccard <= 1.0))


def test_swapping_queries_and_gallery_transposes_the_jaccard_distance():
    q_g, q_q, g_g = random_distances(2)
    forward = k_reciprocal_rerank(q_g, q_q, g_g, 4, 3, 0.0)
    backward = k_reciprocal_rerank(q_g.T, g_g, q_q, 4, 3, 0.0)
    np.testing.assert_allclose(backward.T, forward, atol=1e-12, rtol=0)


def test_gallery_order_does_not_matter():
    q_g, q_q, g_g = random_distances(3)
    perm = np.random.default_rng(0).permutation(q_g.shape[1])
    reranked = k_reciprocal_rerank(q_g, q_q, g_g, 4, 3, 0.3)
    permuted = k_reciprocal_rerank(q_g[:, perm], q_q, g_g[np.ix_(perm, perm)], 4, 3, 0.3)
    np.testing.assert_allclose(permuted, reranked[:, perm], atol=1e-12, rtol=0)


def test_rejects_inconsistent_shapes_and_parameters():
    q_g, q_q, g_g = random_distances(0)
    with pytest.raises(ValueError, match="shapes"):
        k_reciprocal_rerank(q_g, g_g, q_q)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(q_g, q_q, g_g, lambda_value=1.5)
