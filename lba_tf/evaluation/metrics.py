"""Re-identification metrics (CMC, mAP, mINP) under a protocol's exclusion rule and CMC variant.

Every query ranks the gallery by ascending distance (a stable sort, so ties keep gallery order),
drops the gallery entries its protocol excludes (``EvaluationProtocol.keep_mask``), and is scored
on what remains:

- AP: the mean over true-match positions ``i`` (0-based, after exclusion) of
  ``(true matches up to and including i) / (i + 1)``.
- INP: ``(number of true matches) / (1-based rank of the last true match)``.
- CMC: rank-k is the fraction of queries whose first true match is in the top k. Protocols with
  ``collapse_identities`` (SYSU-MM01, LLCM) use the community's variant, which first collapses
  the ranked list to its distinct identities in order of first appearance; the others (RegDB)
  count on the ranked list itself.

Queries with no true match left are skipped. The protocols themselves, their exclusions and CMC
variants are in ``lba_tf.evaluation.protocols``.

The work is vectorised over queries and done in blocks of query rows, so a gallery of 100,000
images is scored without a full distance matrix (``evaluate_features``). Every query is scored
from its own distance row alone and the per-query scores are reduced once at the end, so the
blocking never changes a result. Scores depend only on the order within each row, so ``evaluate``
on ``-(q @ g.T)`` and ``evaluate_features(q, g, ...)`` agree exactly, unless the matrix product
rounds a distance differently in a block and that swaps two distances equal up to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lba_tf.evaluation.protocols import EvaluationProtocol, get_protocol

SCORE_BLOCK_ELEMENTS = 1 << 22
"""Queries are scored in blocks of rows holding about this many distances (bounds memory)."""
DISTANCE_BLOCK_ELEMENTS = 1 << 24
"""Default size, in distances, of the blocks ``feature_distance_chunks`` computes."""


@dataclasses.dataclass(frozen=True)
class QueryScores:
    """Per-query results of one block of queries, before averaging.

    Args:
        first_rank: ``[Q]`` int, 0-based position of the query's identity in its CMC list (the
            collapsed identity list or the ranked list, as the protocol's CMC variant); -1 if no
            match.
        average_precision: ``[Q]`` float64 AP, 0 for queries without a true match.
        inverse_negative_penalty: ``[Q]`` float64 INP, 0 for queries without a true match.
        valid: ``[Q]`` bool, whether a true match is left in the query's gallery.
    """

    first_rank: np.ndarray
    average_precision: np.ndarray
    inverse_negative_penalty: np.ndarray
    valid: np.ndarray

    @classmethod
    def concatenate(cls, blocks: Sequence[QueryScores]) -> QueryScores:
        """Join the scores of consecutive query blocks."""
        return cls(
            *(np.concatenate([getattr(block, field.name) for block in blocks]) for field in dataclasses.fields(cls))
        )


def rows_per_block(num_columns: int, elements: int = SCORE_BLOCK_ELEMENTS) -> int:
    """Rows of a ``[rows, num_columns]`` block that holds about ``elements`` values (>= 1)."""
    return max(1, elements // max(num_columns, 1))


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """Row-wise ``np.argsort(values, axis=1, kind="stable")``, computed faster.

    float32 rows (what float32 features give, with many exact ties) are sorted as unique 64-bit
    keys ``(value, column)``. Other rows take the fast unstable sort: a row whose sorted values
    are strictly increasing has a unique order, so only rows with ties (or NaN) are re-sorted.

    Args:
        values: ``[Q, G]`` array.

    Returns:
        ``[Q, G]`` indices.
    """
    if values.dtype == np.float32:
        return _float32_stable_argsort(values)
    order = np.argsort(values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    has_ties = ~np.all(ranked[:, 1:] > ranked[:, :-1], axis=1)
    if has_ties.any():
        order[has_ties] = np.argsort(values[has_ties], axis=1, kind="stable")
    return order


def _float32_stable_argsort(values: np.ndarray) -> np.ndarray:
    # One NaN (sorted last, as NumPy does) and no -0.0 (equal to 0.0 for NumPy).
    canonical = np.where(np.isnan(values), np.float32(np.nan), values + np.float32(0.0))
    bits = canonical.view(np.uint32)
    monotone = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    keys = monotone.astype(np.uint64) << np.uint64(32)
    keys |= np.arange(values.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def ranked_prefix(distances: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Stable ascending order of each row, cut once it has passed the row's limit.

    Only the ``K`` smallest distances of each row are sorted (``K`` the largest number of
    entries ``<= limit`` in a row of the block): they are found by partition, put back in
    gallery order and sorted stably, which orders every entry up to the row's limit exactly as
    the stable sort of the whole row does.

    Args:
        distances: ``[Q, G]`` distances.
        limits: ``[Q]`` values; NaN asks for the whole row.

    Returns:
        ``[Q, K]`` column indices, ``K <= G``; row ``q`` is exact over its entries ``<= limits[q]``.
    """
    num_gallery = distances.shape[1]
    lengths = np.count_nonzero(distances <= limits[:, None], axis=1)
    lengths[np.isnan(limits)] = num_gallery
    prefix = int(lengths.max(initial=0))
    if 2 * prefix >= num_gallery:
        return stable_argsort(distances)
    if prefix == 0:
        return np.zeros((distances.shape[0], 0), dtype=np.intp)
    candidates = np.sort(np.argpartition(distances, prefix - 1, axis=1)[:, :prefix], axis=1)
    order = stable_argsort(np.take_along_axis(distances, candidates, axis=1))
    return np.take_along_axis(candidates, order, axis=1)


def score_queries(
    distances: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    keep: np.ndarray,
    collapse_identities: bool,
    gallery_codes: np.ndarray | None = None,
) -> QueryScores:
    """Score a block of queries against the gallery.

    Args:
        distances: ``[Q, G]`` distances, smaller = more similar.
        query_pids: ``[Q]`` identities.
        gallery_pids: ``[G]`` identities.
        keep: ``[Q, G]`` bool, the gallery entries each query may be matched against (the
            protocol's ``keep_mask``).
        collapse_identities: the CMC variant: True counts ranks on the ranked list collapsed to
            its distinct identities, False on the ranked list.
        gallery_codes: ``[G]`` identities renumbered ``0..U-1`` (``np.unique(...,
            return_inverse=True)``); computed when omitted.

    Returns:
        The block's ``QueryScores``.
    """
    distances = np.asarray(distances)
    query_pids, gallery_pids, keep = np.asarray(query_pids), np.asarray(gallery_pids), np.asarray(keep)
    num_queries = distances.shape[0]
    matches = (query_pids[:, None] == gallery_pids[None, :]) & keep
    # Nothing after a query's last true match affects its scores: rank only up to it.
    last_match = np.max(np.where(matches, distances, -np.inf), axis=1, initial=-np.inf)
    order = ranked_prefix(distances, last_match)
    # 0: excluded, 1: kept, 2: kept true match; one gather for both masks.
    ranked_status = np.take_along_axis(keep.view(np.uint8) + matches, order, axis=1)
    ranked_keep = ranked_status > 0
    ranked_matches = ranked_status == 2
    positions = np.cumsum(ranked_keep, axis=1) - 1

    # True matches in row-major order: entries of a row are consecutive, by ascending rank.
    rows, cols = np.nonzero(ranked_matches)
    num_matches = np.bincount(rows, minlength=num_queries)
    valid = num_matches > 0
    row_end = np.cumsum(num_matches)
    row_start = row_end - num_matches
    match_positions = positions[rows, cols]
    matches_so_far = np.arange(1, len(rows) + 1) - row_start[rows]
    precision_sums = np.bincount(rows, weights=matches_so_far / (match_positions + 1), minlength=num_queries)
    average_precision = np.zeros(num_queries)
    inverse_negative_penalty = np.zeros(num_queries)
    average_precision[valid] = precision_sums[valid] / num_matches[valid]
    last_positions = match_positions[row_end[valid] - 1]
    inverse_negative_penalty[valid] = num_matches[valid] / (last_positions + 1)

    first_rank = np.full(num_queries, -1, dtype=np.int64)
    first_index = row_start[valid]
    if collapse_identities:
        if gallery_codes is None:
            gallery_codes = np.unique(gallery_pids, return_inverse=True)[1]
        first_col = np.zeros(num_queries, dtype=np.int64)
        first_col[valid] = cols[first_index]
        first_rank[valid] = _identities_before(order, ranked_keep, first_col, gallery_codes)[valid]
    else:
        first_rank[valid] = match_positions[first_index]
    return QueryScores(first_rank, average_precision, inverse_negative_penalty, valid)


def _identities_before(
    order: np.ndarray, ranked_keep: np.ndarray, stop: np.ndarray, gallery_codes: np.ndarray
) -> np.ndarray:
    """Number of distinct identities among each row's kept entries ranked before ``stop``.

    Args:
        order: ``[Q, K]`` gallery indices by rank.
        ranked_keep: ``[Q, K]`` bool, kept entries by rank.
        stop: ``[Q]`` rank (column of ``order``) to count up to, exclusive.
        gallery_codes: ``[G]`` identities as ``0..U-1``.

    Returns:
        ``[Q]`` counts.
    """
    before = ranked_keep & (np.arange(order.shape[1])[None, :] < stop[:, None])
    rows, cols = np.nonzero(before)
    seen = np.zeros((order.shape[0], int(gallery_codes.max(initial=-1)) + 1), dtype=bool)
    seen[rows, gallery_codes[order[rows, cols]]] = True
    return np.count_nonzero(seen, axis=1)


def summarize(scores: QueryScores, max_rank: int = 20) -> dict:
    """Average per-query scores into the protocol's numbers.

    Args:
        scores: the scores of every query.
        max_rank: length of the CMC curve.

    Returns:
        ``{"cmc": [max_rank] float64 (rank-1 first), "mAP": float, "mINP": float,
        "num_valid_queries": int}``, fractions in [0, 1].

    Raises:
        ValueError: if no query has a true match.
    """
    valid = scores.valid
    num_valid = int(np.count_nonzero(valid))
    if num_valid == 0:
        raise ValueError("no query has a true match in its gallery")
    first = np.minimum(scores.first_rank[valid], max_rank)
    cmc = np.cumsum(np.bincount(first, minlength=max_rank + 1)[:max_rank]) / num_valid
    return {
        "cmc": cmc,
        "mAP": float(np.mean(scores.average_precision[valid])),
        "mINP": float(np.mean(scores.inverse_negative_penalty[valid])),
        "num_valid_queries": num_valid,
    }


def evaluate_chunks(
    distance_chunks: Iterable[np.ndarray],
    query_pids,
    gallery_pids,
    query_cams,
    gallery_cams,
    protocol: str | EvaluationProtocol,
    max_rank: int = 20,
) -> dict:
    """Evaluate from consecutive blocks of distance rows, never holding the whole matrix.

    Args:
        distance_chunks: ``[Q_i, G]`` blocks whose rows, in order, are the ``Q`` queries.
        query_pids: ``[Q]`` identities.
        gallery_pids: ``[G]`` identities.
        query_cams: ``[Q]`` camera numbers.
        gallery_cams: ``[G]`` camera numbers.
        protocol: ``"sysu"``, ``"regdb"``, ``"llcm"`` or a protocol object
            (``lba_tf.evaluation.protocols``).
        max_rank: length of the CMC curve.

    Returns:
        The dict of ``summarize``.
    """
    protocol = get_protocol(protocol)
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    query_pids, query_cams = _as_vectors(query_pids, query_cams, "query")
    gallery_pids, gallery_cams = _as_vectors(gallery_pids, gallery_cams, "gallery")
    gallery_codes = np.unique(gallery_pids, return_inverse=True)[1].reshape(-1)
    rows = rows_per_block(len(gallery_pids))
    blocks = []
    start = 0
    for chunk in distance_chunks:
        chunk = np.asarray(chunk)
        stop = start + chunk.shape[0]
        if chunk.ndim != 2 or chunk.shape[1] != len(gallery_pids) or stop > len(query_pids):
            raise ValueError(
                f"distance block of shape {chunk.shape} does not fit "
                f"{len(query_pids)} queries x {len(gallery_pids)} gallery images "
                f"at row {start}"
            )
        for offset in range(0, chunk.shape[0], rows):
            block = slice(start + offset, min(start + offset + rows, stop))
            keep = protocol.keep_mask(query_pids[block], query_cams[block], gallery_pids, gallery_cams)
            blocks.append(
                score_queries(
                    chunk[offset : offset + rows],
                    query_pids[block],
                    gallery_pids,
                    keep,
                    protocol.collapse_identities,
                    gallery_codes,
                )
            )
        start = stop
    if start != len(query_pids):
        raise ValueError(f"distance blocks cover {start} rows, expected {len(query_pids)}")
    return summarize(QueryScores.concatenate(blocks), max_rank)


def evaluate(
    distmat, query_pids, gallery_pids, query_cams, gallery_cams, protocol: str | EvaluationProtocol, max_rank: int = 20
) -> dict:
    """Evaluate a full ``[Q, G]`` distance matrix (smaller = more similar).

    Args:
        distmat: ``[Q, G]`` distances.
        query_pids: ``[Q]`` identities.
        gallery_pids: ``[G]`` identities.
        query_cams: ``[Q]`` camera numbers.
        gallery_cams: ``[G]`` camera numbers.
        protocol: ``"sysu"``, ``"regdb"``, ``"llcm"`` or a protocol object
            (``lba_tf.evaluation.protocols``).
        max_rank: length of the CMC curve.

    Returns:
        ``{"cmc": [max_rank] float64, "mAP": float, "mINP": float, "num_valid_queries": int}``.

    Examples:
        >>> result = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, "sysu")
        >>> rank1, mAP = result["cmc"][0], result["mAP"]
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be [Q, G], got shape {distmat.shape}")
    return evaluate_chunks([distmat], query_pids, gallery_pids, query_cams, gallery_cams, protocol, max_rank)


def feature_distance_chunks(query_feats, gallery_feats, chunk_size: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``-query @ gallery^T`` a block of query rows at a time.

    For L2-normalised features this ranks as cosine or Euclidean distance does.

    Args:
        query_feats: ``[Q, D]`` features.
        gallery_feats: ``[G, D]`` features.
        chunk_size: query rows per block; by default about ``DISTANCE_BLOCK_ELEMENTS``
            distances.

    Yields:
        ``[Q_i, G]`` distance blocks, in query order.
    """
    query_feats = np.asarray(query_feats)
    gallery_t = np.asarray(gallery_feats).T
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = chunk_size or rows_per_block(gallery_t.shape[1], DISTANCE_BLOCK_ELEMENTS)
    for start in range(0, query_feats.shape[0], rows):
        yield -(query_feats[start : start + rows] @ gallery_t)


def evaluate_features(
    query_feats,
    gallery_feats,
    query_pids,
    gallery_pids,
    query_cams,
    gallery_cams,
    protocol: str | EvaluationProtocol,
    max_rank: int = 20,
    chunk_size: int | None = None,
) -> dict:
    """Evaluate L2-normalised features with distance ``-q . g``, block by block.

    The same as ``evaluate(-(query_feats @ gallery_feats.T), ...)`` (see the module note on
    rounding) while holding only ``chunk_size`` rows of distances at a time.

    Args:
        query_feats: ``[Q, D]`` features.
        gallery_feats: ``[G, D]`` features.
        query_pids: ``[Q]`` identities.
        gallery_pids: ``[G]`` identities.
        query_cams: ``[Q]`` camera numbers.
        gallery_cams: ``[G]`` camera numbers.
        protocol: ``"sysu"``, ``"regdb"``, ``"llcm"`` or a protocol object
            (``lba_tf.evaluation.protocols``).
        max_rank: length of the CMC curve.
        chunk_size: query rows per distance block; by default about
            ``DISTANCE_BLOCK_ELEMENTS`` distances. Does not change the result.

    Returns:
        The dict of ``evaluate``.
    """
    chunks = feature_distance_chunks(query_feats, gallery_feats, chunk_size)
    return evaluate_chunks(chunks, query_pids, gallery_pids, query_cams, gallery_cams, protocol, max_rank)


def _as_vectors(pids, cams, name: str) -> tuple[np.ndarray, np.ndarray]:
    pids, cams = np.asarray(pids).reshape(-1), np.asarray(cams).reshape(-1)
    if pids.shape != cams.shape:
        raise ValueError(f"{name} ids ({pids.size}) and cameras ({cams.size}) differ in length")
    return pids, cams
