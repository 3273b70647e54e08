"""Timings of the evaluation metrics on synthetic features of realistic sizes.

Three cases, printed as a table:

- ``sysu``: one full SYSU-MM01 protocol, 3,803 infrared queries of 96 identities (cameras 3 and
  6) against 10 single-shot galleries of one image per identity and visible camera (some
  identity/camera folders missing, about 301 images), metrics from precomputed distance
  matrices; the time is for all 10 trials. Then k-reciprocal re-ranking of the first trial.
- ``large``: a 100,000-image gallery ranked by ``evaluate_features`` in query blocks, reporting
  the time with and without the metrics and the peak of memory allocated during the call.

Usage: ``python benchmarks/bench_evaluation.py [--large-queries 1000] [--dim 2048]``. Synthetic
features (``--separation`` sets how distinct identities are; the default gives SYSU-MM01-like
accuracy) make the metrics do realistic work: the ranks of true matches decide how much of each
row is sorted.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tracemalloc

import numpy as np
from common import record, summarize

from lba_tf.evaluation.metrics import evaluate, evaluate_features, feature_distance_chunks
from lba_tf.evaluation.rerank import k_reciprocal_rerank
from lba_tf.evaluation.results import Metrics, mean_over_trials

SYSU_TEST_IDS = 96
SYSU_QUERIES = 3803
SYSU_QUERY_CAMERAS = (3, 6)
SYSU_GALLERY_CAMERAS = (1, 2, 4, 5)
SYSU_TRIALS = 10


@dataclasses.dataclass
class Row:
    """One line of the table; ``peak_mb`` is memory allocated during the timed call."""

    case: str
    queries: int
    gallery: int
    seconds: float
    peak_mb: float | None
    rank1: float
    mAP: float


def identity_features(
    rng: np.random.Generator, centroids: np.ndarray, pids: np.ndarray, separation: float
) -> np.ndarray:
    """L2-normalised float32 features ``[N, D]``: each identity's centroid plus noise.

    Two images of one identity have cosine similarity about ``separation / sqrt(D)``, that many
    standard deviations of the similarity of two different identities.
    """
    dim = centroids.shape[1]
    noise = float(np.sqrt(np.sqrt(dim) / separation - 1.0))
    feats = centroids[pids] + noise * rng.standard_normal((len(pids), dim), dtype=np.float32)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def bench_sysu(rng: np.random.Generator, dim: int, separation: float, rerank: bool) -> list[Row]:
    """Metrics of 10 SYSU-MM01-sized trials, then re-ranking of the first one."""
    centroids = rng.standard_normal((SYSU_TEST_IDS, dim), dtype=np.float32)
    q_pids = np.sort(rng.integers(0, SYSU_TEST_IDS, SYSU_QUERIES))
    q_cams = rng.choice(SYSU_QUERY_CAMERAS, SYSU_QUERIES)
    query = identity_features(rng, centroids, q_pids, separation)
    has_folder = rng.random((SYSU_TEST_IDS, len(SYSU_GALLERY_CAMERAS))) < 0.71
    has_folder[:, 0] = True
    g_pids, cam_index = np.nonzero(has_folder)
    g_cams = np.asarray(SYSU_GALLERY_CAMERAS)[cam_index]
    galleries = [identity_features(rng, centroids, g_pids, separation) for _ in range(SYSU_TRIALS)]
    distmats = [-(query @ gallery.T) for gallery in galleries]
    start = time.perf_counter()
    results = [evaluate(d, q_pids, g_pids, q_cams, g_cams, "sysu") for d in distmats]
    seconds = time.perf_counter() - start
    mean = mean_over_trials([Metrics.of(r) for r in results])
    rows = [
        Row(
            f"sysu: metrics, {SYSU_TRIALS} trials",
            SYSU_QUERIES,
            len(g_pids),
            seconds,
            None,
            float(mean.cmc[0]),
            mean.mAP,
        )
    ]
    if rerank:
        gallery = galleries[0]
        squared = [
            np.maximum(2.0 - 2.0 * (a @ b.T), 0.0) for a, b in ((query, gallery), (query, query), (gallery, gallery))
        ]
        tracemalloc.start()
        start = time.perf_counter()
        reranked = k_reciprocal_rerank(*squared)
        seconds = time.perf_counter() - start
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        result = evaluate(reranked, q_pids, g_pids, q_cams, g_cams, "sysu")
        rows.append(
            Row(
                "sysu: k-reciprocal re-ranking, 1 trial",
                SYSU_QUERIES,
                len(g_pids),
                seconds,
                peak_mb,
                float(result["cmc"][0]),
                result["mAP"],
            )
        )
    return rows


def bench_large(
    rng: np.random.Generator, num_queries: int, num_gallery: int, dim: int, separation: float, chunk_size: int | None
) -> list[Row]:
    """Distances alone, then distances and metrics, for a large gallery in query blocks."""
    num_ids = num_gallery // 20
    centroids = rng.standard_normal((num_ids, dim), dtype=np.float32)
    g_pids = rng.integers(0, num_ids, num_gallery)
    g_cams = rng.integers(1, 10, num_gallery)
    q_pids = rng.integers(0, num_ids, num_queries)
    q_cams = rng.integers(1, 10, num_queries)
    gallery = identity_features(rng, centroids, g_pids, separation)
    query = identity_features(rng, centroids, q_pids, separation)

    start = time.perf_counter()
    for _ in feature_distance_chunks(query, gallery, chunk_size):
        pass
    distance_seconds = time.perf_counter() - start

    tracemalloc.start()
    start = time.perf_counter()
    result = evaluate_features(query, gallery, q_pids, g_pids, q_cams, g_cams, "llcm", chunk_size=chunk_size)
    seconds = time.perf_counter() - start
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rank1, mAP = float(result["cmc"][0]), result["mAP"]
    return [
        Row(
            f"large: distances only (dim {dim})",
            num_queries,
            num_gallery,
            distance_seconds,
            None,
            float("nan"),
            float("nan"),
        ),
        Row("large: distances + metrics (llcm)", num_queries, num_gallery, seconds, peak_mb, rank1, mAP),
    ]


def print_table(rows: list[Row]) -> None:
    print(f"{'case':<38} {'queries':>8} {'gallery':>8} {'time (s)':>9} {'peak MB':>8} {'rank-1':>7} {'mAP':>7}")
    for row in rows:
        peak = f"{row.peak_mb:8.1f}" if row.peak_mb is not None else f"{'-':>8}"
        print(
            f"{row.case:<38} {row.queries:>8} {row.gallery:>8} {row.seconds:>9.3f} {peak} "
            f"{row.rank1:>7.3f} {row.mAP:>7.3f}"
        )


def run(
    dim: int = 2048,
    separation: float = 2.5,
    large_queries: int = 1000,
    large_gallery: int = 100_000,
    chunk_size: int | None = None,
    skip_large: bool = False,
    skip_rerank: bool = False,
    repeats: int = 1,
) -> dict:
    """Every case ``repeats`` times on the same features; seconds are the median and spread."""
    runs = []
    for _ in range(repeats):
        rng = np.random.default_rng(0)
        rows = bench_sysu(rng, dim, separation, not skip_rerank)
        if not skip_large:
            rows += bench_large(rng, large_queries, large_gallery, dim, separation, chunk_size)
        runs.append(rows)
    table = []
    for case_rows in zip(*runs):
        row = dataclasses.asdict(case_rows[0])
        row["seconds"] = summarize([r.seconds for r in case_rows])
        table.append(row)
    settings = {
        "dim": dim,
        "separation": separation,
        "large_queries": large_queries,
        "large_gallery": large_gallery,
        "chunk_size": chunk_size,
        "repeats": repeats,
    }
    return record("evaluation", settings, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument(
        "--separation", type=float, default=2.5, help="same-identity similarity in standard deviations of the others'"
    )
    parser.add_argument("--large-queries", type=int, default=1000)
    parser.add_argument("--large-gallery", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=None, help="query rows per block (default: the library's)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-rerank", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every case (median time)")
    args = parser.parse_args()
    result = run(
        args.dim,
        args.separation,
        args.large_queries,
        args.large_gallery,
        args.chunk_size,
        args.skip_large,
        args.skip_rerank,
        args.repeats,
    )
    print_table([Row(**{**row, "seconds": row["seconds"]["median"]}) for row in result["rows"]])


if __name__ == "__main__":
    main()
