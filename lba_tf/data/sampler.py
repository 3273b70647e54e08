"""Cross-modal identity sampler: P identities x K visible and K infrared images per step.

Every batch is a pure function of ``(seed, stream, epoch, step)``: a run that restarts at any
step draws exactly the batches it would have drawn, with no random state to save.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lba_tf.data.errors import DataError
from lba_tf.data.records import MODALITY_INDEX, ImageRecord


class IdentitySampler:
    """Draws the identity-major cross-modal training batches of the recipe.

    Each step picks ``num_identities`` (P) distinct identities uniformly; for each one it draws
    ``num_instances`` (K) visible and K infrared images uniformly with replacement. Both halves
    are identity-major: sample ``i`` of the visible half and sample ``i`` of the infrared half
    belong to the ``i // K``-th drawn identity. Indices are positions in ``records``.

    Args:
        records: the training images of both modalities, with labels ``>= 0``.
        num_identities: P, identities per step.
        num_instances: K, images per identity and modality.
        seed: the run's seed.
        steps_per_epoch: steps in an epoch; ``None`` means
            ``floor(max(#visible, #infrared) / (P * K)) + 1``, the batches the authors' sampler
            builds and trains on (SYSU-MM01: 696, RegDB: 65).

    Raises:
        DataError: empty records, an unlabelled record, an identity missing from one modality
            (named by its pid), or P larger than the number of identities.
        ValueError: a non-positive P, K or epoch length, or a negative seed.

    Examples:

    >>> sampler = IdentitySampler(records, num_identities=8, num_instances=4, seed=0)
    >>> rgb, ir = sampler.batch_indices(epoch=3, step=17)   # two int64 arrays of shape [32]
    >>> labels = sampler.labels[np.concatenate([rgb, ir])]  # [64], identity-major halves
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        num_identities: int,
        num_instances: int,
        seed: int = 0,
        steps_per_epoch: int | None = None,
    ):
        if num_identities < 1 or num_instances < 1:
            raise ValueError(f"P and K must be >= 1, got P={num_identities}, K={num_instances}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not records:
            raise DataError("no training records to sample from")
        self.records = tuple(records)
        self.num_identities = num_identities
        self.num_instances = num_instances
        self.seed = seed
        self.labels = np.array([r.label for r in self.records], np.int32)
        unlabelled = np.flatnonzero(self.labels < 0)
        if unlabelled.size:
            first = self.records[unlabelled[0]]
            raise DataError(f"{unlabelled.size} record(s) have no training label (label < 0), e.g. {first.path}")
        modality = _modality_codes(self.records)
        self.identities = np.unique(self.labels)
        if num_identities > self.identities.size:
            raise DataError(
                f"P={num_identities} identities per batch (data.num_identities) but the training records hold "
                f"only {self.identities.size} identities: set data.num_identities to at most {self.identities.size}"
            )
        pid_of_label = {r.label: r.pid for r in self.records}
        pids = [pid_of_label[label] for label in self.identities.tolist()]
        self._pools = {}
        for name, code in MODALITY_INDEX.items():
            rows = np.flatnonzero(modality == code)
            self._pools[name] = _IdentityPool(rows, self.labels[rows], self.identities, pids, name)
        self.num_visible = self._pools["visible"].rows.size
        self.num_infrared = self._pools["infrared"].rows.size
        if steps_per_epoch is None:
            steps_per_epoch = max(self.num_visible, self.num_infrared) // self.images_per_modality + 1
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch

    @property
    def images_per_modality(self) -> int:
        """P * K, the size of each half of a batch."""
        return self.num_identities * self.num_instances

    @property
    def batch_size(self) -> int:
        """2 * P * K, the images of one step, both halves."""
        return 2 * self.images_per_modality

    def batch_indices(self, epoch: int, step: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The record indices of one step, a pure function of ``(seed, stream, epoch, step)``.

        Args:
            epoch: the epoch, ``>= 0``.
            step: the step inside the epoch, ``0 <= step < steps_per_epoch``.
            stream: an independent sequence of batches (one per replica), ``>= 0``.

        Returns:
            ``(visible, infrared)``, int64 arrays ``[P * K]`` of positions in ``records``.
        """
        if epoch < 0 or stream < 0 or not 0 <= step < self.steps_per_epoch:
            raise ValueError(
                f"need epoch >= 0, stream >= 0 and 0 <= step < {self.steps_per_epoch}; "
                f"got epoch={epoch}, step={step}, stream={stream}"
            )
        rng = np.random.default_rng([self.seed, stream, epoch, step])
        chosen = rng.choice(self.identities.size, self.num_identities, replace=False)
        visible = self._pools["visible"].draw(rng, chosen, self.num_instances)
        infrared = self._pools["infrared"].draw(rng, chosen, self.num_instances)
        return visible, infrared

    def epoch(self, epoch: int, start_step: int = 0, stream: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield :meth:`batch_indices` for steps ``start_step .. steps_per_epoch - 1`` of ``epoch``."""
        for step in range(start_step, self.steps_per_epoch):
            yield self.batch_indices(epoch, step, stream)

    def __len__(self) -> int:
        return self.steps_per_epoch


class _IdentityPool:
    """The rows of one modality grouped by identity: ``rows[start[i] : start[i] + count[i]]``.

    Every identity must have a row: a batch draws K images of each of its identities in both
    modalities. ``pids`` name the ``identities`` (labels) in the error.
    """

    def __init__(self, rows: np.ndarray, labels: np.ndarray, identities: np.ndarray, pids: list[int], name: str):
        order = np.lexsort((rows, labels))
        self.rows = rows[order].astype(np.int64)
        sorted_labels = labels[order]
        self.start = np.searchsorted(sorted_labels, identities, side="left")
        self.count = np.searchsorted(sorted_labels, identities, side="right") - self.start
        empty = np.flatnonzero(self.count == 0)
        if empty.size:
            shown = ", ".join(f"{pids[i]} (label {identities[i]})" for i in empty[:10])
            more = ", ..." if empty.size > 10 else ""
            raise DataError(
                f"no {name} image among the training records for identit{'ies' if empty.size > 1 else 'y'} "
                f"{shown}{more}; every identity of a batch needs K images of each modality: add {name} images "
                f"or leave {'them' if empty.size > 1 else 'it'} out of the training set"
            )

    def draw(self, rng: np.random.Generator, chosen: np.ndarray, k: int) -> np.ndarray:
        """K rows with replacement for each chosen identity, identity-major, ``[len(chosen) * k]``."""
        offsets = rng.integers(0, self.count[chosen][:, None], size=(chosen.size, k))
        return self.rows[self.start[chosen][:, None] + offsets].reshape(-1)


def _modality_codes(records: Sequence[ImageRecord]) -> np.ndarray:
    """``MODALITY_INDEX`` code of each record ``[M]``; an unknown modality is an error."""
    try:
        return np.array([MODALITY_INDEX[r.modality] for r in records], np.int32)
    except KeyError as err:
        raise ValueError(f"unknown modality {err.args[0]!r}; expected one of {sorted(MODALITY_INDEX)}") from None
