"""Evaluation results: each trial's metrics, their mean, the chance level, as percent rows, table and JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from lba_tf.data.records import Direction, TestSplit
from lba_tf.evaluation.metrics import evaluate
from lba_tf.evaluation.protocols import EvaluationProtocol, split_labels

RANKS = (1, 5, 10, 20)
"""The CMC ranks of a row."""
COLUMNS = tuple(f"rank{k}" for k in RANKS) + ("mAP", "mINP")
"""The keys of a row, in the order of the table."""
CHANCE_SEED = 12345
CHANCE_DRAWS = 10


@dataclasses.dataclass(frozen=True)
class Metrics:
    """CMC, mAP and mINP of one trial, or their mean over trials or chance draws.

    Args:
        cmc: ``[max_rank]`` float64, the CMC curve (rank-1 first), fractions in [0, 1].
        mAP: the mean average precision, in [0, 1].
        mINP: the mean inverse negative penalty, in [0, 1].

    Examples:

    >>> trial = Metrics.of(evaluate(distmat, q_pids, g_pids, q_cams, g_cams, "sysu"))  # doctest: +SKIP
    >>> trial.row()["rank1"], trial.row()["mAP"]  # in percent  # doctest: +SKIP
    """

    cmc: np.ndarray
    mAP: float
    mINP: float

    @classmethod
    def of(cls, result: Mapping) -> Metrics:
        """The metrics of a dict of ``lba_tf.evaluation.evaluate`` (``cmc``, ``mAP``, ``mINP``)."""
        return cls(np.asarray(result["cmc"], dtype=np.float64), float(result["mAP"]), float(result["mINP"]))

    def row(self) -> dict[str, float]:
        """rank-1/5/10/20 (those within the curve), mAP and mINP, in percent."""
        row = {f"rank{k}": 100.0 * float(self.cmc[k - 1]) for k in RANKS if k <= len(self.cmc)}
        row["mAP"] = 100.0 * self.mAP
        row["mINP"] = 100.0 * self.mINP
        return row


def mean_over_trials(trials: Sequence[Metrics]) -> Metrics:
    """The mean of each metric over trials (curves of one length).

    Raises:
        ValueError: ``trials`` is empty.
    """
    if not trials:
        raise ValueError("no trial results to average")
    return Metrics(
        np.mean(np.stack([t.cmc for t in trials]), 0),
        float(np.mean([t.mAP for t in trials])),
        float(np.mean([t.mINP for t in trials])),
    )


def chance_level(
    split: TestSplit, protocol: str | EvaluationProtocol, max_rank: int = 20, draws: int = CHANCE_DRAWS
) -> Metrics:
    """What learning must beat: the mean metrics of ``draws`` random rankings of ``split``.

    The rankings are uniform random distances from a fixed seed, scored under the protocol's
    exclusions and CMC variant.
    """
    rng = np.random.default_rng(CHANCE_SEED)
    labels = split_labels(split)
    return mean_over_trials(
        [
            Metrics.of(
                evaluate(rng.random((len(split.query), len(split.gallery))), *labels, protocol, max_rank=max_rank)
            )
            for _ in range(draws)
        ]
    )


@dataclasses.dataclass(frozen=True)
class DirectionResult:
    """The evaluation of one direction.

    Args:
        direction: the dataset's name of the direction.
        trials: the metrics of each trial.
        chance: the chance level, the mean over trials of each trial's ``chance_level``.
        scored: what each query ranked, e.g. ``"queries: 8 infrared; gallery: 24 visible"``.
    """

    direction: Direction
    trials: Sequence[Metrics]
    chance: Metrics
    scored: str = ""

    @property
    def mean(self) -> Metrics:
        """The mean over trials, the number reported."""
        return mean_over_trials(self.trials)

    def rows(self) -> list[tuple[str, dict[str, float]]]:
        """``(name, percent row)`` of each trial (``"0"``, ``"1"``, ...), ``"mean"`` and ``"chance"``."""
        return [(str(i), t.row()) for i, t in enumerate(self.trials)] + [
            ("mean", self.mean.row()),
            ("chance", self.chance.row()),
        ]

    def to_json(self) -> dict:
        """``{"trials": [row], "mean": row, "chance": row, "num_trials": int, "scored": str}``."""
        return {
            "trials": [t.row() for t in self.trials],
            "mean": self.mean.row(),
            "chance": self.chance.row(),
            "num_trials": len(self.trials),
            "scored": self.scored,
        }


def format_table(results: Mapping[str, DirectionResult]) -> str:
    """A plain-text table: one row per trial, the mean and the chance level, per direction."""
    header = f"{'direction':<22} {'trial':>6} " + " ".join(f"{c:>7}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for direction, result in results.items():
        if result.scored:
            lines.append(f"{direction}: {result.scored} (each query ranks the gallery)")
        for name, row in result.rows():
            lines.append(f"{direction:<22} {name:>6} " + " ".join(f"{row[c]:7.2f}" for c in COLUMNS))
    return "\n".join(lines)


def results_json(results: Mapping[str, DirectionResult]) -> dict:
    """The results as plain JSON: per direction its trials, mean and chance level (percent)."""
    return {direction: result.to_json() for direction, result in results.items()}
