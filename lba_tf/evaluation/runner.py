"""Evaluating a model on a dataset's protocol: features once per image, then every trial scored,
and the ranked lists of each direction's first trial (``lba_tf.evaluation.ranked_lists``)."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from lba_tf.data.pipeline import inference_dataset, load_images
from lba_tf.data.records import MODALITY_INDEX, ImageRecord, ReIDDataset, TestSplit
from lba_tf.evaluation.metrics import evaluate
from lba_tf.evaluation.protocols import EvaluationProtocol, split_labels
from lba_tf.evaluation.ranked_lists import RankedLists, trial_ranked_lists
from lba_tf.evaluation.rerank import k_reciprocal_rerank
from lba_tf.evaluation.results import DirectionResult, Metrics, chance_level, mean_over_trials
from lba_tf.log import logger

__all__ = [
    "EvaluationResults",
    "describe_split",
    "evaluate_model",
    "extract_features",
    "score_split",
    "split_distances",
]

_EMBED_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _embed_function(model):
    """One traced inference function per model, so evaluating every few epochs does not retrace.

    The function reaches the model through a weak reference: a strong one in the cache's value
    would keep its key, the model, alive for the life of the process.
    """
    if model not in _EMBED_FUNCTIONS:
        ref = weakref.ref(model)
        _EMBED_FUNCTIONS[model] = tf.function(lambda x, m: ref().embed(x, m, training=False), reduce_retracing=True)
    return _EMBED_FUNCTIONS[model]


def extract_features(model, images: np.ndarray, modality: Sequence[int], batch_size: int) -> np.ndarray:
    """Embeddings of cached images, each through the stem of its modality.

    Args:
        model: an ``LbAModel`` (anything with ``embed(images, modality)``).
        images: uint8 ``[M, H, W, 3]``.
        modality: ``[M]`` modality codes (0 visible, 1 infrared).
        batch_size: images per forward pass.

    Returns:
        float32 ``[M, D]``, L2-normalised.
    """
    modality = np.asarray(modality, np.int32)
    embed = _embed_function(model)
    out, start = [], 0
    for batch in inference_dataset(images, batch_size):
        stop = start + int(batch.shape[0])
        out.append(embed(batch, tf.constant(modality[start:stop])).numpy())
        start = stop
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _unique_records(splits: Sequence[TestSplit]) -> list[ImageRecord]:
    seen: dict[str, ImageRecord] = {}
    for split in splits:
        for record in (*split.query, *split.gallery):
            seen.setdefault(record.path, record)
    return list(seen.values())


def split_distances(split: TestSplit, features: Mapping[str, np.ndarray], rerank: bool = False) -> np.ndarray:
    """``[Q, G]`` distances of one trial from precomputed features (``path -> [D]`` L2-normalised):
    negated cosine similarities, or k-reciprocal re-ranked distances."""
    q = np.stack([features[r.path] for r in split.query])
    g = np.stack([features[r.path] for r in split.gallery])
    if rerank:
        # squared Euclidean distances of unit vectors
        return k_reciprocal_rerank(2.0 - 2.0 * q @ g.T, 2.0 - 2.0 * q @ q.T, 2.0 - 2.0 * g @ g.T)
    return -(q @ g.T)


def _metrics(split: TestSplit, distances: np.ndarray, protocol, max_rank: int = 20) -> Metrics:
    return Metrics.of(evaluate(distances, *split_labels(split), protocol, max_rank=max_rank))


def score_split(
    split: TestSplit,
    features: dict[str, np.ndarray],
    protocol: str | EvaluationProtocol,
    rerank: bool = False,
    max_rank: int = 20,
) -> Metrics:
    """Metrics of one trial from precomputed features (``path -> [D]`` L2-normalised)."""
    return _metrics(split, split_distances(split, features, rerank), protocol, max_rank)


def _side(records: Sequence[ImageRecord]) -> str:
    counts = {m: sum(r.modality == m for r in records) for m in MODALITY_INDEX}
    return " + ".join(f"{n} {m}" for m, n in counts.items() if n) or "0"


def describe_split(split: TestSplit) -> str:
    """What a split scores, e.g. ``"queries: 8 infrared; gallery: 24 visible"``.

    The roles are those of the score matrix (each query ranks the gallery), so the line says what
    was computed even where a protocol's direction name suggests otherwise (LLCM
    ``visible_to_infrared``: the drawn infrared images rank the visible set).
    """
    return f"queries: {_side(split.query)}; gallery: {_side(split.gallery)}"


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResults(Mapping):
    """What an evaluation found: ``{direction: DirectionResult}`` (it reads as that mapping, as
    ``format_table`` and ``results_json`` take it), and what to draw of it.

    Args:
        results: ``{direction: DirectionResult}``, in the protocol's order.
        ranked_lists: ``{direction: RankedLists}``, the chosen queries of each direction's first
            trial (``lba_tf.evaluation.ranked_lists``), ranked as they were scored.
    """

    results: Mapping[str, DirectionResult]
    ranked_lists: Mapping[str, RankedLists] = dataclasses.field(default_factory=dict)

    def __getitem__(self, direction: str) -> DirectionResult:
        return self.results[direction]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


def evaluate_model(
    model,
    dataset: ReIDDataset,
    *,
    height: int,
    width: int,
    trials: int,
    batch_size: int = 64,
    rerank: bool = False,
    skip_corrupt: bool = False,
    directions: Sequence[str] | None = None,
) -> EvaluationResults:
    """Run the dataset's protocol on ``model``.

    Every image that appears in any query or gallery of any trial is decoded and embedded once;
    the ranked lists of the first trial are drawn from those images and distances (the few drawn
    images copied, the decoded ones then let go), and each trial is scored from the features.

    Args:
        model: an ``LbAModel``.
        dataset: a reader from ``lba_tf.data.datasets``.
        height, width: the model's input size.
        trials: random galleries (or splits) per direction.
        batch_size: images per forward pass.
        rerank: apply k-reciprocal re-ranking (the ranked lists show re-ranked distances).
        skip_corrupt: skip undecodable images instead of failing.
        directions: a subset of ``dataset.protocol.directions``; all by default.

    Returns:
        :class:`EvaluationResults`: ``{direction: DirectionResult}`` and the ranked lists.
    """
    protocol = dataset.protocol
    results, ranked = {}, {}
    for direction in directions or protocol.directions:
        splits = protocol.test_splits(dataset.test_images, direction, trials)
        records = _unique_records(splits)
        logger.info("%s: embedding %d images for %d trial(s)", direction, len(records), len(splits))
        cache = load_images(dataset.root, records, height, width, skip_corrupt=skip_corrupt)
        feats = extract_features(model, cache.images, [MODALITY_INDEX[r.modality] for r in cache.records], batch_size)
        by_path = {r.path: f for r, f in zip(cache.records, feats)}
        kept = [
            dataclasses.replace(
                s, query=[r for r in s.query if r.path in by_path], gallery=[r for r in s.gallery if r.path in by_path]
            )
            for s in splits
        ]
        first = split_distances(kept[0], by_path, rerank)
        images = dict(zip((r.path for r in cache.records), cache.images))
        ranked[direction] = trial_ranked_lists(kept[0], first, protocol, images, similarity=not rerank)
        del cache, images  # the ranked lists hold copies of the few images they draw
        per_trial = [_metrics(kept[0], first, protocol)] + [score_split(s, by_path, protocol, rerank) for s in kept[1:]]
        chance = mean_over_trials([chance_level(s, protocol) for s in kept])
        results[direction] = DirectionResult(direction, per_trial, chance, describe_split(kept[0]))
    return EvaluationResults(results, ranked)
