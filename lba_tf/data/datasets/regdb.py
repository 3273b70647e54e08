"""RegDB reader: one of the ten train/test splits, evaluated in both directions."""

from __future__ import annotations

import os

from lba_tf.data.datasets.common import (
    ListEntry,
    check_both_modalities,
    check_direction,
    check_trials,
    read_list_file,
    require_dir,
)
from lba_tf.data.records import Direction, ImageRecord, Modality, TestSplit

QUERY_CAMERA, GALLERY_CAMERA = 1, 2
_FILE_MODALITY: dict[str, Modality] = {"visible": "visible", "thermal": "infrared"}


class RegDB:
    """RegDB in its distributed layout, for one split (one trained model per split).

    ``Visible/<...>.bmp``, ``Thermal/<...>.bmp`` and ``idx/{train,test}_{visible,thermal}_{t}.txt``
    with lines ``<relative path> <label>``; the label is the identity. Training labels are the
    identities' labels renumbered in order to 0..num_classes-1 (unchanged when they already are).
    Training records are visible (camera 1) then thermal (camera 2), in file order. In a test split
    the queries count as camera 1 and the gallery as camera 2, so the protocol excludes nothing.

    Args:
        root: the dataset folder.
        trial: the split, 1..10.

    Raises:
        DatasetError: a missing folder or index file, an unparsable line or a missing image
            (file and line number), or a training identity missing from one modality.

    Examples:

    >>> dataset = RegDB("data/RegDB", trial=3)  # doctest: +SKIP
    >>> [s.trial for s in dataset.test_splits("visible_to_infrared", 1)]  # doctest: +SKIP
    [3]
    """

    protocol = "regdb"
    directions: tuple[Direction, ...] = ("visible_to_infrared", "infrared_to_visible")

    def __init__(self, root: str, trial: int = 1):
        if not isinstance(trial, int) or not 1 <= trial <= 10:
            raise ValueError(f"RegDB trial must be an integer in 1..10, got {trial!r}")
        self.root = str(root)
        self.trial = trial
        require_dir(self.root)
        for folder in ("Visible", "Thermal", "idx"):
            require_dir(os.path.join(self.root, folder))
        lists = {(split, kind): read_list_file(self._index_file(split, kind), self.root)
                 for split in ("train", "test") for kind in ("visible", "thermal")}
        train = [self._record(entry, kind, camera)
                 for kind, camera in (("visible", QUERY_CAMERA), ("thermal", GALLERY_CAMERA))
                 for entry in lists["train", kind]]
        check_both_modalities(
            train, f"{self._index_file('train', 'visible')} and {self._index_file('train', 'thermal')}")
        label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in train}))}
        self.train = [ImageRecord(r.path, r.pid, r.camera, r.modality, label_of[r.pid]) for r in train]
        self.num_classes = len(label_of)
        self._test_lists = {kind: lists["test", kind] for kind in ("visible", "thermal")}

    def _index_file(self, split: str, kind: str) -> str:
        return os.path.join(self.root, "idx", f"{split}_{kind}_{self.trial}.txt")

    @staticmethod
    def _record(entry: ListEntry, kind: str, camera: int) -> ImageRecord:
        return ImageRecord(entry.path, entry.label, camera, _FILE_MODALITY[kind])

    def test_splits(self, direction: Direction, trials: int = 1) -> list[TestSplit]:
        """The test split of this reader's ``trial``, as a one-element list.

        RegDB's splits are not random galleries: each split trains its own model, so ``trials``
        (which must be at least 1) does not multiply anything here, and the split's ``trial`` is
        the RegDB split number.

        Args:
            direction: ``"visible_to_infrared"`` (query test_visible, gallery test_thermal) or
                ``"infrared_to_visible"`` (query test_thermal, gallery test_visible).
            trials: accepted for the common interface; at least 1.
        """
        check_direction(direction, self.directions, "RegDB")
        check_trials(trials)
        query_kind, gallery_kind = (("visible", "thermal") if direction == "visible_to_infrared"
                                    else ("thermal", "visible"))
        query = tuple(self._record(e, query_kind, QUERY_CAMERA) for e in self._test_lists[query_kind])
        gallery = tuple(self._record(e, gallery_kind, GALLERY_CAMERA) for e in self._test_lists[gallery_kind])
        return [TestSplit(direction, self.trial, query, gallery)]
