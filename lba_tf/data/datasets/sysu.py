"""SYSU-MM01 reader: training set, infrared queries and the literature's random RGB galleries."""

from __future__ import annotations

import os

from lba_tf.data.datasets.common import (
    DatasetError,
    all_images,
    check_both_modalities,
    check_direction,
    check_trials,
    draw_gallery,
    identity_folders,
    read_id_file,
    require_dir,
)
from lba_tf.data.records import Direction, ImageRecord, TestSplit

RGB_CAMERAS = {"all": ("cam1", "cam2", "cam4", "cam5"), "indoor": ("cam1", "cam2")}
"""Gallery cameras of each search mode, in the protocol's order."""
IR_CAMERAS = ("cam3", "cam6")


class SYSUMM01:
    """SYSU-MM01 in its distributed layout.

    ``cam1`` ... ``cam6`` / ``<pid as 4 digits>`` / ``<4 digits>.jpg`` and ``exp/train_id.txt``,
    ``exp/val_id.txt``, ``exp/test_id.txt`` (one line of comma-separated integers each). The
    training set is every RGB and IR image of the train and val identities, labelled in the order
    of the sorted distinct pids of the IR set; records are ordered RGB then IR, each by pid, camera
    and file name. The test direction is infrared -> visible: the queries are every cam3 and cam6
    image of the test identities, and the gallery of trial ``t`` is drawn as in every VI-ReID paper
    (see :func:`lba_tf.data.datasets.common.draw_gallery`).

    Args:
        root: the dataset folder.
        search_mode: ``"all"`` (gallery cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        gallery_shots: ``"single"`` (one image per identity and camera) or ``"multi"`` (ten).

    Raises:
        DatasetError: a missing camera folder or id file, an unparsable id file, an identity
            both in training and test, or a training identity missing from one modality.

    Examples:

    >>> dataset = SYSUMM01("data/SYSU-MM01")  # doctest: +SKIP
    >>> dataset.num_classes, len(dataset.test_splits("infrared_to_visible", 10))  # doctest: +SKIP
    (395, 10)
    """

    protocol = "sysu"
    directions: tuple[Direction, ...] = ("infrared_to_visible",)

    def __init__(self, root: str, search_mode: str = "all", gallery_shots: str = "single"):
        if search_mode not in RGB_CAMERAS:
            raise ValueError(f"search_mode must be 'all' or 'indoor', got {search_mode!r}")
        if gallery_shots not in ("single", "multi"):
            raise ValueError(f"gallery_shots must be 'single' or 'multi', got {gallery_shots!r}")
        self.root = str(root)
        self.search_mode = search_mode
        self.gallery_shots = gallery_shots
        require_dir(self.root)
        exp = os.path.join(self.root, "exp")
        train_ids = read_id_file(os.path.join(exp, "train_id.txt")) + read_id_file(
            os.path.join(exp, "val_id.txt"))
        test_ids = read_id_file(os.path.join(exp, "test_id.txt"))
        overlap = sorted(set(train_ids) & set(test_ids))
        if overlap:
            raise DatasetError(f"{exp}: identities {overlap} are listed for both training and test")
        self.train = self._training_set(train_ids)
        self.num_classes = len({r.label for r in self.train})
        self._query = all_images(identity_folders(self.root, IR_CAMERAS, "infrared", test_ids))
        self._gallery_folders = identity_folders(
            self.root, RGB_CAMERAS[search_mode], "visible", test_ids)

    def _training_set(self, pids: list[int]) -> list[ImageRecord]:
        visible = all_images(identity_folders(self.root, RGB_CAMERAS["all"], "visible", pids))
        infrared = all_images(identity_folders(self.root, IR_CAMERAS, "infrared", pids))
        unlabelled = visible + infrared
        check_both_modalities(unlabelled, self.root, pids)
        label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in infrared}))}
        return [ImageRecord(r.path, r.pid, r.camera, r.modality, label_of[r.pid]) for r in unlabelled]

    def test_splits(self, direction: Direction, trials: int) -> list[TestSplit]:
        """The query and gallery of trials ``0 .. trials - 1`` (the query is the same in each).

        Args:
            direction: must be ``"infrared_to_visible"``.
            trials: the number of random galleries.
        """
        check_direction(direction, self.directions, "SYSU-MM01")
        check_trials(trials)
        return [TestSplit(direction, t, self._query,
                          draw_gallery(self._gallery_folders, t, self.gallery_shots))
                for t in range(trials)]
