"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) of query-gallery distances.

Queries and gallery images are pooled into one set of ``N = Q + G`` samples. With ``N(i, k)``
the sample ``i`` itself and its ``k`` nearest other samples:

- k-reciprocal neighbours: ``R(i, k) = {j in N(i, k) : i in N(j, k)}``;
- expansion: ``R*(i, k1)`` adds ``R(c, k1 / 2)`` for every ``c`` in ``R(i, k1)`` with
  ``|R(i, k1) & R(c, k1 / 2)| >= 2/3 |R(c, k1 / 2)|``;
- encoding: ``V[i, j] = exp(-d(i, j))`` for ``j`` in ``R*(i, k1)``, else 0;
- local query expansion: ``V[i]`` becomes the mean of ``V[j]`` over the ``k2`` nearest samples
  ``j`` of ``i`` (``i`` included);
- Jaccard distance: ``d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(V[p, j], V[g, j])``;
- result: ``(1 - lambda) * d_J(p, g) + lambda * d(p, g)``.

The paper's formulas are applied to the distances as given: no squaring or per-column scaling
(which some published code adds), an unnormalised kernel ``exp(-d)``, and ``>=`` in the
expansion rule. Distances should be non-negative and of order one, e.g. squared Euclidean
distances of L2-normalised features. Neighbours are ranked by a stable sort, so ties resolve by
sample order (queries first, then gallery).
"""

from __future__ import annotations

import numpy as np

from lba_tf.evaluation.metrics import ranked_prefix, rows_per_block


def nearest_neighbours(distances: np.ndarray, count: int) -> np.ndarray:
    """Each sample followed by its nearest other samples, nearest first.

    Args:
        distances: ``[N, N]`` distances between the samples.
        count: neighbours to return per sample, the sample itself included (``<= N``).

    Returns:
        ``[N, count]`` indices; column 0 is the sample itself.
    """
    n = distances.shape[0]
    rows = rows_per_block(n)
    blocks = []
    for start in range(0, n, rows):
        block = distances[start : start + rows].copy()
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        kth_smallest = np.partition(block, count - 1, axis=1)[:, count - 1]
        blocks.append(ranked_prefix(block, kth_smallest)[:, :count])
    return np.concatenate(blocks)


def reciprocal_neighbours(neighbours: np.ndarray, k: int) -> np.ndarray:
    """``R(i, k)`` for every sample, as a boolean matrix.

    Args:
        neighbours: ``[N, >= k + 1]`` output of ``nearest_neighbours``.
        k: neighbourhood size (the sample itself not counted).

    Returns:
        ``[N, N]`` bool, ``[i, j]`` true when ``j`` is a k-reciprocal neighbour of ``i``.
    """
    n = neighbours.shape[0]
    forward = np.zeros((n, n), dtype=bool)
    forward[np.arange(n)[:, None], neighbours[:, : k + 1]] = True
    return forward & forward.T


def expanded_reciprocal_neighbours(neighbours: np.ndarray, k1: int) -> np.ndarray:
    """``R*(i, k1)``: the k-reciprocal set grown by the half-size sets of its members.

    Args:
        neighbours: ``[N, >= k1 + 1]`` output of ``nearest_neighbours``.
        k1: neighbourhood size.

    Returns:
        ``[N, N]`` bool membership of ``R*(i, k1)``.
    """
    half_k = int(round(k1 / 2))
    reciprocal = reciprocal_neighbours(neighbours, k1)
    half = reciprocal_neighbours(neighbours, half_k)
    rows = np.arange(neighbours.shape[0])[:, None, None]
    candidates = neighbours[:, : k1 + 1]  # [N, k1 + 1]
    members = neighbours[:, : half_k + 1][candidates]  # [N, k1 + 1, half_k + 1]
    in_half_set = half[candidates[:, :, None], members]  # member of R(c, half_k)
    overlap = np.count_nonzero(in_half_set & reciprocal[rows, members], axis=-1)
    size = np.count_nonzero(in_half_set, axis=-1)
    accepted = reciprocal[rows[:, :, 0], candidates] & (3 * overlap >= 2 * size)
    added = accepted[:, :, None] & in_half_set
    expanded = reciprocal.copy()
    expanded[np.broadcast_to(rows, added.shape)[added], members[added]] = True
    return expanded


def jaccard_distance(probe_weights: np.ndarray, gallery_weights: np.ndarray) -> np.ndarray:
    """``1 - sum min / sum max`` between non-negative, mostly zero encodings.

    Only pairs sharing a non-zero coordinate are visited: the gallery encodings are indexed by
    coordinate and joined with the probes' non-zeros, a block of probes at a time.

    Args:
        probe_weights: ``[Q, N]`` encodings, non-negative.
        gallery_weights: ``[G, N]`` encodings, non-negative.

    Returns:
        ``[Q, G]`` distances in [0, 1]; 1 where both encodings are zero.
    """
    num_probes, num_gallery = probe_weights.shape[0], gallery_weights.shape[0]
    coords, gallery_index = np.nonzero(gallery_weights.T)  # grouped by coordinate
    gallery_values = gallery_weights[gallery_index, coords]
    per_coord = np.bincount(coords, minlength=probe_weights.shape[1])
    coord_start = np.cumsum(per_coord) - per_coord
    minimum_sum = np.zeros((num_probes, num_gallery))
    rows = rows_per_block(num_gallery)
    for start in range(0, num_probes, rows):
        block = probe_weights[start : start + rows]
        probe_rows, probe_coords = np.nonzero(block)
        pairs = per_coord[probe_coords]
        source = np.repeat(np.arange(len(probe_rows)), pairs)
        within = np.arange(len(source)) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        target = coord_start[probe_coords[source]] + within
        shared = np.minimum(block[probe_rows, probe_coords][source], gallery_values[target])
        flat = probe_rows[source] * num_gallery + gallery_index[target]
        minimum_sum[start : start + len(block)] = np.bincount(
            flat, weights=shared, minlength=len(block) * num_gallery
        ).reshape(-1, num_gallery)
    maximum_sum = probe_weights.sum(1)[:, None] + gallery_weights.sum(1)[None, :] - minimum_sum
    similarity = np.divide(minimum_sum, maximum_sum, out=np.zeros_like(minimum_sum), where=maximum_sum > 0)
    return 1.0 - similarity


def k_reciprocal_rerank(
    q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-rank query-gallery distances with k-reciprocal encoding.

    Args:
        q_g_dist: ``[Q, G]`` query-gallery distances.
        q_q_dist: ``[Q, Q]`` query-query distances.
        g_g_dist: ``[G, G]`` gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhoods.
        k2: size of the local query expansion (1 turns it off).
        lambda_value: weight of the original distance in the result.

    Returns:
        ``[Q, G]`` float64 ``(1 - lambda_value) * jaccard + lambda_value * q_g_dist``.

    Examples:
        >>> reranked = k_reciprocal_rerank(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3)
        >>> result = evaluate(reranked, q_pids, g_pids, q_cams, g_cams, "sysu")
    """
    q_g = np.asarray(q_g_dist, dtype=np.float64)
    q_q = np.asarray(q_q_dist, dtype=np.float64)
    g_g = np.asarray(g_g_dist, dtype=np.float64)
    num_queries, num_gallery = q_g.shape
    if q_q.shape != (num_queries, num_queries) or g_g.shape != (num_gallery, num_gallery):
        raise ValueError(f"distance shapes do not match: q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(
            f"need k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1, got k1={k1}, k2={k2}, lambda_value={lambda_value}"
        )
    distances = np.block([[q_q, q_g], [q_g.T, g_g]])
    n = distances.shape[0]
    k1, k2 = min(k1, n - 1), min(k2, n)
    neighbours = nearest_neighbours(distances, max(k1 + 1, k2))
    members = expanded_reciprocal_neighbours(neighbours, k1)
    weights = np.zeros_like(distances)
    weights[members] = np.exp(-distances[members])
    if k2 > 1:
        expanded = weights[neighbours[:, 0]]
        for column in range(1, k2):
            expanded += weights[neighbours[:, column]]
        weights = expanded / k2
    jaccard = jaccard_distance(weights[:num_queries], weights[num_queries:])
    return (1.0 - lambda_value) * jaccard + lambda_value * q_g
