"""RegDB reader: one train/test split's training set and the test lists its protocol splits."""

from __future__ import annotations

import os

from lba_tf.data.datasets.common import ListEntry, check_both_modalities, read_list_file, require_dir
from lba_tf.data.records import ImageRecord, Modality
from lba_tf.evaluation.protocols import RegDBProtocol

CAMERA: dict[str, int] = {"visible": 1, "thermal": 2}
"""The camera number of each index file kind (RegDB's two sensors)."""
_FILE_MODALITY: dict[str, Modality] = {"visible": "visible", "thermal": "infrared"}


class RegDB:
    """RegDB in its distributed layout, for one split (one trained model per split).

    ``Visible/<...>.bmp``, ``Thermal/<...>.bmp`` and ``idx/{train,test}_{visible,thermal}_{t}.txt``
    with lines ``<relative path> <label>``; the label is the identity. Training labels are the
    identities' labels renumbered in order to 0..num_classes-1 (unchanged when they already are).
    Training records are visible (camera 1) then thermal (camera 2), in file order. ``test_images``
    are the split's test lists, ``{"visible": test_visible, "infrared": test_thermal}`` records in
    file order, which :class:`RegDBProtocol` makes the queries and gallery of each direction.

    Args:
        root: the dataset folder.
        trial: the split, 1..10.

    Raises:
        DatasetError: a missing folder or index file, an unparsable line or a missing image
            (file and line number), or a training identity missing from one modality.

    Examples:

    >>> dataset = RegDB("data/RegDB", trial=3)  # doctest: +SKIP
    >>> splits = dataset.protocol.test_splits(dataset.test_images, "visible_to_infrared")  # doctest: +SKIP
    >>> [s.trial for s in splits]  # doctest: +SKIP
    [3]
    """

    def __init__(self, root: str, trial: int = 1):
        if not isinstance(trial, int) or not 1 <= trial <= 10:
            raise ValueError(f"RegDB trial must be an integer in 1..10, got {trial!r}")
        self.protocol = RegDBProtocol(trial)
        self.root = str(root)
        self.trial = trial
        require_dir(self.root)
        for folder in ("Visible", "Thermal", "idx"):
            require_dir(os.path.join(self.root, folder))
        lists = {
            (split, kind): read_list_file(self._index_file(split, kind), self.root)
            for split in ("train", "test")
            for kind in ("visible", "thermal")
        }
        train = [self._record(entry, kind) for kind in ("visible", "thermal") for entry in lists["train", kind]]
        check_both_modalities(
            train, f"{self._index_file('train', 'visible')} and {self._index_file('train', 'thermal')}"
        )
        label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in train}))}
        self.train = [ImageRecord(r.path, r.pid, r.camera, r.modality, label_of[r.pid]) for r in train]
        self.num_classes = len(label_of)
        self.test_images: dict[Modality, list[ImageRecord]] = {
            _FILE_MODALITY[kind]: [self._record(entry, kind) for entry in lists["test", kind]]
            for kind in ("visible", "thermal")
        }

    def _index_file(self, split: str, kind: str) -> str:
        return os.path.join(self.root, "idx", f"{split}_{kind}_{self.trial}.txt")

    @staticmethod
    def _record(entry: ListEntry, kind: str) -> ImageRecord:
        return ImageRecord(entry.path, entry.label, CAMERA[kind], _FILE_MODALITY[kind])
