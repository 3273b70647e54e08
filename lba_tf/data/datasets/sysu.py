"""SYSU-MM01 reader: the training set and the test identity folders its protocol splits."""

from __future__ import annotations

import os

from lba_tf.data.datasets.common import (
    DatasetError,
    check_both_modalities,
    identity_folders,
    read_id_file,
    require_dir,
)
from lba_tf.data.records import IdentityFolder, ImageRecord, Modality, all_images
from lba_tf.evaluation.protocols import SYSUMM01Protocol

RGB_CAMERAS = {mode: tuple(f"cam{c}" for c in cameras) for mode, cameras in SYSUMM01Protocol.VISIBLE_CAMERAS.items()}
"""The RGB camera folders of each search mode's gallery, in the protocol's order."""
IR_CAMERAS = ("cam3", "cam6")


class SYSUMM01:
    """SYSU-MM01 in its distributed layout.

    ``cam1`` ... ``cam6`` / ``<pid as 4 digits>`` / ``<4 digits>.jpg`` and ``exp/train_id.txt``,
    ``exp/val_id.txt``, ``exp/test_id.txt`` (one line of comma-separated integers each). The
    training set is every RGB and IR image of the train and val identities, labelled in the order
    of the sorted distinct pids of the IR set; records are ordered RGB then IR, each by pid, camera
    and file name. ``test_images`` are the test identities' folders in the IR cameras and in the
    gallery cameras of the search mode, which :class:`SYSUMM01Protocol` splits into the infrared
    queries and the random RGB galleries of every VI-ReID paper.

    Args:
        root: the dataset folder.
        search_mode: ``"all"`` (gallery cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        gallery_shots: ``"single"`` (one image per identity and camera) or ``"multi"`` (ten).

    Raises:
        DatasetError: a missing camera folder or id file, an unparsable id file, an identity
            both in training and test, or a training identity missing from one modality.

    Examples:

    >>> dataset = SYSUMM01("data/SYSU-MM01")  # doctest: +SKIP
    >>> splits = dataset.protocol.test_splits(dataset.test_images, "infrared_to_visible", 10)  # doctest: +SKIP
    >>> dataset.num_classes, len(splits)  # doctest: +SKIP
    (395, 10)
    """

    def __init__(self, root: str, search_mode: str = "all", gallery_shots: str = "single"):
        self.protocol = SYSUMM01Protocol(search_mode, gallery_shots)
        self.root = str(root)
        require_dir(self.root)
        exp = os.path.join(self.root, "exp")
        train_ids = read_id_file(os.path.join(exp, "train_id.txt")) + read_id_file(os.path.join(exp, "val_id.txt"))
        test_ids = read_id_file(os.path.join(exp, "test_id.txt"))
        overlap = sorted(set(train_ids) & set(test_ids))
        if overlap:
            raise DatasetError(f"{exp}: identities {overlap} are listed for both training and test")
        self.train = self._training_set(train_ids)
        self.num_classes = len({r.label for r in self.train})
        self.test_images: dict[Modality, list[IdentityFolder]] = {
            "infrared": identity_folders(self.root, IR_CAMERAS, "infrared", test_ids),
            "visible": identity_folders(self.root, RGB_CAMERAS[search_mode], "visible", test_ids),
        }

    def _training_set(self, pids: list[int]) -> list[ImageRecord]:
        visible = all_images(identity_folders(self.root, RGB_CAMERAS["all"], "visible", pids))
        infrared = all_images(identity_folders(self.root, IR_CAMERAS, "infrared", pids))
        unlabelled = visible + infrared
        check_both_modalities(unlabelled, self.root, pids)
        label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in infrared}))}
        return [ImageRecord(r.path, r.pid, r.camera, r.modality, label_of[r.pid]) for r in unlabelled]
