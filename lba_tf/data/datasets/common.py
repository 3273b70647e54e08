"""Helpers shared by the dataset readers: errors, id and list files, identity folders.

Every check here fails loudly with a :class:`DatasetError` naming the offending path (and line),
so that a damaged or misplaced dataset never trains or evaluates silently on the wrong images.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence

from lba_tf.data.errors import DataError
from lba_tf.data.records import IdentityFolder, ImageRecord, Modality

CAMERA_FOLDER = re.compile(r"cam([0-9])")
"""A camera folder name, ``cam<digit>`` (use with ``fullmatch``)."""
_NUMBER = re.compile(r"[0-9]+")


class DatasetError(DataError):
    """A dataset folder is missing, incomplete or malformed; the message names the path."""


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One line ``<relative path> <label>`` of an index file.

    Args:
        path: the image path, relative to the dataset root, with ``/`` separators.
        label: the integer on the line.
        where: ``"<file>:<line>"``, for error messages.
    """

    path: str
    label: int
    where: str


def require_dir(path: str) -> str:
    """Return ``path`` if it is a folder, else raise :class:`DatasetError`."""
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: folder not found")
    return path


def require_file(path: str) -> str:
    """Return ``path`` if it is a file, else raise :class:`DatasetError`."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found")
    return path


def read_id_file(path: str) -> list[int]:
    """Read an identity file: one line of comma-separated integers (``exp/test_id.txt``).

    Raises:
        DatasetError: the file is missing or empty, has more than one line, a token that is not a
            non-negative integer, or a repeated identity.
    """
    with open(require_file(path)) as f:
        lines = [(number, line.strip()) for number, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise DatasetError(f"{path}: no identities (expected one line of comma-separated integers)")
    if len(lines) > 1:
        raise DatasetError(f"{path}:{lines[1][0]}: expected a single line of comma-separated integers")
    number, line = lines[0]
    ids = []
    for token in line.split(","):
        token = token.strip()
        if not _NUMBER.fullmatch(token):
            raise DatasetError(f"{path}:{number}: {token!r} is not an identity number")
        ids.append(int(token))
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DatasetError(f"{path}:{number}: identities listed twice: {repeated}")
    return ids


def read_list_file(path: str, root: str) -> list[ListEntry]:
    """Read an index file of ``<relative path> <label>`` lines; every listed image must exist.

    Args:
        path: the index file.
        root: the dataset root the listed paths are relative to.

    Raises:
        DatasetError: the file is missing or empty, a line does not parse, or a listed image is
            not a file; the message gives the file and line number.
    """
    entries = []
    with open(require_file(path)) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            fields = line.split()
            if len(fields) != 2 or not _NUMBER.fullmatch(fields[1]):
                raise DatasetError(f"{where}: expected '<relative path> <label>', got {line.strip()!r}")
            image = fields[0].replace("\\", "/").lstrip("/")
            if not os.path.isfile(os.path.join(root, image)):
                raise DatasetError(f"{where}: image {os.path.join(root, image)} not found")
            entries.append(ListEntry(image, int(fields[1]), where))
    if not entries:
        raise DatasetError(f"{path}: no images listed")
    return entries


def camera_number(folder: str) -> int:
    """The camera number of a folder ``.../cam<digit>``, e.g. ``"test_nir/cam4"`` -> 4."""
    match = CAMERA_FOLDER.fullmatch(folder.rstrip("/").rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"{folder!r} is not a camera folder 'cam<digit>'")
    return int(match.group(1))


def identity_folders(
    root: str, cameras: Sequence[str], modality: Modality, pids: Iterable[int]
) -> list[IdentityFolder]:
    """The folders ``<camera>/<pid:04d>`` that exist, in order of sorted pid, then ``cameras``.

    An identity may lack a folder in some cameras; an existing folder must not be empty.

    Args:
        root: the dataset root.
        cameras: camera folders relative to ``root`` (``"cam1"``, ``"test_vis/cam2"``), in the
            protocol's order; each must exist.
        modality: the modality of those cameras.
        pids: the identities.
    """
    for camera in cameras:
        require_dir(os.path.join(root, camera))
    folders = []
    for pid in sorted(pids):
        for camera in cameras:
            path = f"{camera}/{pid:04d}"
            full = os.path.join(root, path)
            if os.path.isdir(full):
                files = tuple(sorted(os.listdir(full)))
                if not files:
                    raise DatasetError(f"{full}: empty identity folder")
                folders.append(IdentityFolder(path, pid, camera_number(camera), modality, files))
    return folders


def check_both_modalities(train: Sequence[ImageRecord], source: str, pids: Iterable[int] | None = None) -> None:
    """Raise :class:`DatasetError` if a training identity lacks images in a modality.

    The sampler draws K visible and K infrared images of every identity in a batch, so each
    training identity needs both. The message names each such identity and the modality it lacks.

    Args:
        train: the training records.
        source: the folder or files the records came from, for the message.
        pids: the identities that must be present; default: every pid of ``train``.
    """
    pids = {r.pid for r in train} if pids is None else set(pids)
    problems = []
    for modality in ("visible", "infrared"):
        missing = sorted(pids - {r.pid for r in train if r.modality == modality})
        if missing:
            shown = ", ".join(str(pid) for pid in missing[:10]) + (", ..." if len(missing) > 10 else "")
            problems.append(f"no {modality} image for training identit{'ies' if len(missing) > 1 else 'y'} {shown}")
    if problems:
        raise DatasetError(
            f"{source}: {'; '.join(problems)}; a batch draws K visible and K infrared images of each of its "
            "identities: add the missing images or leave those identities out of training"
        )
