"""LLCM reader: the training lists and the test identity folders its protocol splits."""

from __future__ import annotations

import os
import re

from lba_tf.data.datasets.common import (
    CAMERA_FOLDER,
    DatasetError,
    ListEntry,
    check_both_modalities,
    identity_folders,
    read_id_file,
    read_list_file,
    require_dir,
)
from lba_tf.data.records import IdentityFolder, ImageRecord, Modality
from lba_tf.evaluation.protocols import LLCMProtocol

VISIBLE_CAMERAS = tuple(f"test_vis/cam{c}" for c in (1, 2, 3, 4, 5, 6, 7, 8, 9))
INFRARED_CAMERAS = tuple(f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9))
_PID = re.compile(r"[0-9]{4}")
_CAMERA_IN_NAME = re.compile(r"_c([0-9]+)_")


def parse_train_path(entry: ListEntry) -> tuple[int, int]:
    """The ``(pid, camera)`` of a training image path.

    The pid is the image's 4-digit parent folder. The camera is the digit of a ``cam<d>`` folder
    in the path (``test_vis/cam3/0001/x.jpg``) or else the number after ``_c`` in the file name
    (``nir/0351/0351_c06_s200656_f4830_nir.jpg``).

    Raises:
        DatasetError: neither is found; the message gives the index file and line.
    """
    parts = entry.path.split("/")
    if len(parts) < 2 or not _PID.fullmatch(parts[-2]):
        raise DatasetError(f"{entry.where}: {entry.path!r} is not in a 4-digit identity folder")
    folders = [m for m in map(CAMERA_FOLDER.fullmatch, parts[:-1]) if m]
    name = _CAMERA_IN_NAME.search(parts[-1])
    if not folders and name is None:
        raise DatasetError(f"{entry.where}: no camera ('cam<d>' folder or '_c<n>_' in the name) in {entry.path!r}")
    camera = int(folders[-1].group(1)) if folders else int(name.group(1))
    return int(parts[-2]), camera


class LLCM:
    """LLCM in its distributed layout.

    ``test_vis/cam1..cam9/<pid as 4 digits>/...``, ``test_nir/cam1,cam2,cam4..cam9/...``,
    ``idx/train_vis.txt`` and ``idx/train_nir.txt`` (lines ``<relative path> <label>``) and
    ``idx/test_id.txt`` (one line of comma-separated ids). Training records are the visible list
    then the infrared list, in file order; their labels are the listed labels renumbered in order
    to 0..num_classes-1 (unchanged when they already are), and each label must name one identity
    in both lists. ``test_images`` are the test identities' folders in every test_vis and test_nir
    camera, which :class:`LLCMProtocol` splits as the LLCM authors' test script does: in each
    direction, one image per identity and camera is drawn from one modality for trial ``t`` as for
    SYSU-MM01, and every test image of the other is used.

    Args:
        root: the dataset folder.
        gallery_shots: ``"single"`` (one image per identity and camera) or ``"multi"`` (ten).

    Raises:
        DatasetError: a missing folder or index file, an unparsable line or a missing image
            (file and line number), a label naming two identities (or the reverse), a training
            identity missing from one modality, or an identity both in training and test.

    Examples:

    >>> dataset = LLCM("data/LLCM")  # doctest: +SKIP
    >>> splits = dataset.protocol.test_splits(dataset.test_images, "visible_to_infrared", 10)  # doctest: +SKIP
    """

    def __init__(self, root: str, gallery_shots: str = "single"):
        self.protocol = LLCMProtocol(gallery_shots)
        self.root = str(root)
        require_dir(self.root)
        for folder in ("idx", "test_vis", "test_nir"):
            require_dir(os.path.join(self.root, folder))
        idx = os.path.join(self.root, "idx")
        self.train = self._training_set(os.path.join(idx, "train_vis.txt"), os.path.join(idx, "train_nir.txt"))
        self.num_classes = len({r.label for r in self.train})
        test_ids = read_id_file(os.path.join(idx, "test_id.txt"))
        overlap = sorted(set(test_ids) & {r.pid for r in self.train})
        if overlap:
            raise DatasetError(f"{idx}: identities {overlap} are listed for both training and test")
        self.test_images: dict[Modality, list[IdentityFolder]] = {
            "visible": identity_folders(self.root, VISIBLE_CAMERAS, "visible", test_ids),
            "infrared": identity_folders(self.root, INFRARED_CAMERAS, "infrared", test_ids),
        }

    def _training_set(self, visible_file: str, infrared_file: str) -> list[ImageRecord]:
        records, pid_of_label, label_of_pid = [], {}, {}
        for path, modality in ((visible_file, "visible"), (infrared_file, "infrared")):
            for entry in read_list_file(path, self.root):
                pid, camera = parse_train_path(entry)
                if pid_of_label.setdefault(entry.label, pid) != pid:
                    raise DatasetError(
                        f"{entry.where}: label {entry.label} is given to identities "
                        f"{pid_of_label[entry.label]} and {pid}"
                    )
                if label_of_pid.setdefault(pid, entry.label) != entry.label:
                    raise DatasetError(
                        f"{entry.where}: identity {pid} has labels {label_of_pid[pid]} and {entry.label}"
                    )
                records.append(ImageRecord(entry.path, pid, camera, modality))
        check_both_modalities(records, f"{visible_file} and {infrared_file}")
        compact = {label: i for i, label in enumerate(sorted(pid_of_label))}
        return [ImageRecord(r.path, r.pid, r.camera, r.modality, compact[label_of_pid[r.pid]]) for r in records]
