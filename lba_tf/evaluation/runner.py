"""Evaluating a model on a dataset's protocol: features once per image, every trial, a table."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Sequence

import numpy as np
import tensorflow as tf

from lba_tf.data.pipeline import inference_dataset, load_images
from lba_tf.data.records import MODALITY_INDEX, ImageRecord, ReIDDataset, TestSplit
from lba_tf.evaluation.metrics import evaluate, mean_over_trials
from lba_tf.evaluation.rerank import k_reciprocal_rerank
from lba_tf.log import logger

RANKS = (1, 5, 10, 20)
CHANCE_SEED = 12345


_EMBED_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _embed_function(model):
    """One traced inference function per model, so evaluating every few epochs does not retrace.

    The function reaches the model through a weak reference: a strong one in the cache's value
    would keep its key, the model, alive for the life of the process.
    """
    if model not in _EMBED_FUNCTIONS:
        ref = weakref.ref(model)
        _EMBED_FUNCTIONS[model] = tf.function(lambda x, m: ref().embed(x, m, training=False),
                                              reduce_retracing=True)
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


def _arrays(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.pid for r in records], np.int64), np.array([r.camera for r in records], np.int64))


def summarize_result(result: dict) -> dict:
    """rank-1/5/10/20, mAP and mINP of a metrics dict, in percent, for tables and JSON."""
    cmc = np.asarray(result["cmc"])
    row = {f"rank{k}": 100.0 * float(cmc[k - 1]) for k in RANKS if k <= len(cmc)}
    row["mAP"] = 100.0 * float(result["mAP"])
    row["mINP"] = 100.0 * float(result["mINP"])
    return row


def score_split(split: TestSplit, features: dict[str, np.ndarray], protocol: str,
                rerank: bool = False, max_rank: int = 20) -> dict:
    """Metrics of one trial from precomputed features (``path -> [D]`` L2-normalised)."""
    q = np.stack([features[r.path] for r in split.query])
    g = np.stack([features[r.path] for r in split.gallery])
    q_pids, q_cams = _arrays(split.query)
    g_pids, g_cams = _arrays(split.gallery)
    if rerank:
        # squared Euclidean distances of unit vectors
        distmat = k_reciprocal_rerank(2.0 - 2.0 * q @ g.T, 2.0 - 2.0 * q @ q.T, 2.0 - 2.0 * g @ g.T)
    else:
        distmat = -(q @ g.T)
    return evaluate(distmat, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=max_rank)


def chance_level(split: TestSplit, protocol: str, max_rank: int = 20, draws: int = 10) -> dict:
    """The mean metrics of ``draws`` random rankings of this split (fixed seed): what learning
    must beat."""
    rng = np.random.default_rng(CHANCE_SEED)
    q_pids, q_cams = _arrays(split.query)
    g_pids, g_cams = _arrays(split.gallery)
    return mean_over_trials([
        evaluate(rng.random((len(split.query), len(split.gallery))), q_pids, g_pids, q_cams, g_cams,
                 protocol, max_rank=max_rank) for _ in range(draws)])


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


@dataclasses.dataclass
class DirectionResult:
    """The evaluation of one direction: every trial, their mean, the chance level, and what was
    scored (``describe_split`` of the first trial)."""

    direction: str
    trials: list[dict]
    mean: dict
    chance: dict
    scored: str = ""

    def to_json(self) -> dict:
        return {"trials": [summarize_result(t) for t in self.trials],
                "mean": summarize_result(self.mean), "chance": summarize_result(self.chance),
                "num_trials": len(self.trials), "scored": self.scored}


def evaluate_model(model, dataset: ReIDDataset, *, height: int, width: int, trials: int,
                   batch_size: int = 64, rerank: bool = False, skip_corrupt: bool = False,
                   directions: Sequence[str] | None = None) -> dict[str, DirectionResult]:
    """Run the dataset's protocol on ``model``.

    Every image that appears in any query or gallery of any trial is decoded and embedded once;
    each trial is then scored from those features.

    Args:
        model: an ``LbAModel``.
        dataset: a reader from ``lba_tf.data.datasets``.
        height, width: the model's input size.
        trials: random galleries (or splits) per direction.
        batch_size: images per forward pass.
        rerank: apply k-reciprocal re-ranking.
        skip_corrupt: skip undecodable images instead of failing.
        directions: a subset of ``dataset.directions``; all by default.

    Returns:
        ``{direction: DirectionResult}``.
    """
    results = {}
    for direction in directions or dataset.directions:
        splits = dataset.test_splits(direction, trials)
        records = _unique_records(splits)
        logger.info("%s: embedding %d images for %d trial(s)", direction, len(records), len(splits))
        cache = load_images(dataset.root, records, height, width, skip_corrupt=skip_corrupt)
        feats = extract_features(model, cache.images,
                                 [MODALITY_INDEX[r.modality] for r in cache.records], batch_size)
        by_path = {r.path: f for r, f in zip(cache.records, feats)}
        kept = [dataclasses.replace(s, query=[r for r in s.query if r.path in by_path],
                                    gallery=[r for r in s.gallery if r.path in by_path]) for s in splits]
        per_trial = [score_split(s, by_path, dataset.protocol, rerank) for s in kept]
        chance = mean_over_trials([chance_level(s, dataset.protocol) for s in kept])
        results[direction] = DirectionResult(direction, per_trial, mean_over_trials(per_trial), chance,
                                             describe_split(kept[0]))
    return results


def format_table(results: dict[str, DirectionResult]) -> str:
    """A plain-text table: one row per trial, the mean and the chance level, per direction."""
    cols = [f"rank{k}" for k in RANKS] + ["mAP", "mINP"]
    header = f"{'direction':<22} {'trial':>6} " + " ".join(f"{c:>7}" for c in cols)
    lines = [header, "-" * len(header)]
    for direction, res in results.items():
        if res.scored:
            lines.append(f"{direction}: {res.scored} (each query ranks the gallery)")
        rows = [(str(i), summarize_result(t)) for i, t in enumerate(res.trials)]
        rows += [("mean", summarize_result(res.mean)), ("chance", summarize_result(res.chance))]
        for name, row in rows:
            lines.append(f"{direction:<22} {name:>6} " + " ".join(f"{row[c]:7.2f}" for c in cols))
    return "\n".join(lines)


def results_json(results: dict[str, DirectionResult]) -> dict:
    """The results as plain JSON: per direction its trials, mean and chance level (percent)."""
    return {direction: res.to_json() for direction, res in results.items()}
