"""Builders of small dataset trees in the layouts SYSU-MM01, RegDB and LLCM are distributed in.

Every image is a real (tiny) picture whose gray level encodes its identity, so a test can decode
it. Each builder returns what it wrote, for tests to derive their expectations from.

Examples:

>>> root = write_sysu(tmp_path, train_ids=[1], val_ids=[2], test_ids=[3],
...                   images=sysu_images([1, 2, 3], cameras=(1, 2, 3, 4, 5, 6), count=2))
"""

from __future__ import annotations

import os
import pathlib
import random
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

SYSU_CAMERAS = (1, 2, 3, 4, 5, 6)
LLCM_CAMERAS = {"vis": (1, 2, 3, 4, 5, 6, 7, 8, 9), "nir": (1, 2, 4, 5, 6, 7, 8, 9)}
IMAGE_SIZE = (8, 4)
"""``(height, width)`` of every written image."""


def write_image(path: str | os.PathLike, pid: int, gray: bool = False) -> None:
    """Write a tiny image (format from the extension) whose pixels are ``pid % 256``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = IMAGE_SIZE if gray else (*IMAGE_SIZE, 3)
    Image.fromarray(np.full(shape, pid % 256, np.uint8)).save(path)


def _write_ids(path: pathlib.Path, ids: Iterable[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(str(i) for i in ids) + "\n")


def sysu_images(pids: Iterable[int], cameras: Iterable[int], count: int) -> dict[tuple[int, int], list[str]]:
    """``count`` files ``0001.jpg`` ... per pid and camera, for :func:`write_sysu`."""
    return {(camera, pid): [f"{k:04d}.jpg" for k in range(1, count + 1)] for pid in pids for camera in cameras}


def write_sysu(
    root: str | os.PathLike,
    train_ids: Sequence[int],
    val_ids: Sequence[int],
    test_ids: Sequence[int],
    images: Mapping[tuple[int, int], Sequence[str]],
) -> pathlib.Path:
    """Write a SYSU-MM01 tree: ``cam1..cam6/<pid:04d>/<name>`` and ``exp/{train,val,test}_id.txt``.

    Args:
        root: the dataset folder to create.
        train_ids, val_ids, test_ids: the identity files' contents, in the given order.
        images: ``{(camera, pid): file names}``; a camera folder is created for every camera,
            an identity folder only for the keys given. IR cameras (3, 6) get grayscale files.
    """
    root = pathlib.Path(root)
    for camera in SYSU_CAMERAS:
        (root / f"cam{camera}").mkdir(parents=True, exist_ok=True)
    for (camera, pid), names in images.items():
        for name in names:
            write_image(root / f"cam{camera}" / f"{pid:04d}" / name, pid, gray=camera in (3, 6))
    for split, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
        _write_ids(root / "exp" / f"{split}_id.txt", ids)
    return root


def small_sysu(root: str | os.PathLike) -> pathlib.Path:
    """A ready SYSU-MM01 tree: 3 train + 1 val ids, 3 test ids, 2-3 images per camera, gaps.

    Test id 12 has no cam6 and no cam1 folder; train id 2 has no cam5 folder.
    """
    images = sysu_images([1, 2, 5, 7], SYSU_CAMERAS, 2)
    del images[5, 2]
    images.update(sysu_images([9, 12, 15], SYSU_CAMERAS, 3))
    del images[6, 12], images[1, 12]
    return write_sysu(root, train_ids=[5, 1, 7], val_ids=[2], test_ids=[15, 9, 12], images=images)


def regdb_split(ids: Sequence[int], trial: int) -> tuple[list[int], list[int]]:
    """The (train, test) identities of RegDB split ``trial`` in :func:`write_regdb`: half each."""
    shuffled = random.Random(trial).sample(sorted(ids), len(ids))
    half = len(ids) // 2
    return sorted(shuffled[:half]), sorted(shuffled[half:])


def write_regdb(root: str | os.PathLike, ids: Sequence[int], images_per_id: int, trials: Iterable[int]) -> pathlib.Path:
    """Write a RegDB tree: ``Visible/<pid>/*.bmp``, ``Thermal/<pid>/*.bmp`` and the index files.

    Index lines are ``<relative path> <label>``. The training label of an identity is its rank
    among the split's training ids (0..n-1); the test label is the pid itself.

    Args:
        root: the dataset folder to create.
        ids: every identity.
        images_per_id: images per identity and modality.
        trials: the splits to write, each from :func:`regdb_split`.
    """
    root = pathlib.Path(root)
    kinds = {"visible": ("Visible", "v"), "thermal": ("Thermal", "t")}
    for folder, letter in kinds.values():
        for pid in ids:
            for k in range(1, images_per_id + 1):
                write_image(
                    root / folder / str(pid) / f"person_{letter}_{k:02d}_{pid}.bmp", pid, gray=folder == "Thermal"
                )
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for trial in trials:
        train, test = regdb_split(ids, trial)
        for kind, (folder, letter) in kinds.items():
            for split, pids in (("train", train), ("test", test)):
                lines = [
                    f"{folder}/{pid}/person_{letter}_{k:02d}_{pid}.bmp {train.index(pid) if split == 'train' else pid}"
                    for pid in pids
                    for k in range(1, images_per_id + 1)
                ]
                (root / "idx" / f"{split}_{kind}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def llcm_name(pid: int, camera: int, k: int, modality: str) -> str:
    """An LLCM-style file name, ``0007_c03_s0042_f0002_vis.jpg``."""
    return f"{pid:04d}_c{camera:02d}_s{pid * 10 + camera:04d}_f{k:04d}_{modality}.jpg"


def write_llcm(
    root: str | os.PathLike,
    train: Mapping[tuple[str, int, int], int],
    test_ids: Sequence[int],
    test: Mapping[tuple[str, int, int], Sequence[str]],
) -> pathlib.Path:
    """Write an LLCM tree.

    Training images go to ``<vis|nir>/<pid:04d>/<llcm_name>`` and are listed in
    ``idx/train_vis.txt`` / ``idx/train_nir.txt`` (labels: the pid's rank among the training
    pids); test images go to ``test_vis/cam<c>/<pid:04d>/<name>`` and ``test_nir/...``, with every
    camera folder created, and ``idx/test_id.txt`` lists ``test_ids``.

    Args:
        root: the dataset folder to create.
        train: ``{(modality "vis"|"nir", camera, pid): number of images}``.
        test_ids: the contents of ``idx/test_id.txt``, in the given order.
        test: ``{(modality, camera, pid): file names}``.
    """
    root = pathlib.Path(root)
    rank = {pid: i for i, pid in enumerate(sorted({pid for _, _, pid in train}))}
    lines: dict[str, list[str]] = {"vis": [], "nir": []}
    for (modality, camera, pid), count in train.items():
        for k in range(1, count + 1):
            path = f"{modality}/{pid:04d}/{llcm_name(pid, camera, k, modality)}"
            write_image(root / path, pid, gray=modality == "nir")
            lines[modality].append(f"{path} {rank[pid]}")
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for modality, listed in lines.items():
        (root / "idx" / f"train_{modality}.txt").write_text("\n".join(listed) + "\n")
        for camera in LLCM_CAMERAS[modality]:
            (root / f"test_{modality}" / f"cam{camera}").mkdir(parents=True, exist_ok=True)
    for (modality, camera, pid), names in test.items():
        for name in names:
            write_image(root / f"test_{modality}" / f"cam{camera}" / f"{pid:04d}" / name, pid, gray=modality == "nir")
    _write_ids(root / "idx" / "test_id.txt", test_ids)
    return root


def small_llcm(root: str | os.PathLike) -> pathlib.Path:
    """A ready LLCM tree: 3 training ids (2 cameras each modality), 3 test ids over a few cameras.

    Test id 30 has no visible cam2 folder; test id 40 no infrared cam4 folder.
    """
    train = {
        (modality, camera, pid): 2
        for pid in (3, 8, 11)
        for modality, camera in (("vis", 1), ("vis", 5), ("nir", 2), ("nir", 7))
    }
    test = {}
    for pid in (20, 30, 40):
        for modality, cameras in (("vis", (1, 2, 4)), ("nir", (2, 4, 9))):
            for camera in cameras:
                test[modality, camera, pid] = [llcm_name(pid, camera, k, modality) for k in (3, 1, 12)]
    del test["vis", 2, 30], test["nir", 4, 40]
    return write_llcm(root, train, test_ids=[40, 20, 30], test=test)


def literal_gallery(
    root: str | os.PathLike, test_ids: Iterable[int], cameras: Sequence[str], trial: int, shots: str = "single"
) -> list[str]:
    """The random gallery of the protocol spec, drawn literally with the global ``random``.

    The reference the protocols' galleries are checked against: seed Python's ``random`` with the trial, then
    for each test id (as 4 digits, sorted) and each camera folder in order that exists, take
    ``random.choice`` (single-shot) or ``random.sample(files, min(10, n))`` (multi-shot) of the
    folder's sorted file paths.

    Returns:
        The drawn image paths, ``<root>/<camera>/<pid>/<name>``.
    """
    random.seed(trial)
    drawn = []
    for pid in sorted(f"{i:04d}" for i in test_ids):
        for camera in cameras:
            folder = os.path.join(str(root), camera, pid)
            if os.path.isdir(folder):
                files = sorted(folder + "/" + name for name in os.listdir(folder))
                if shots == "single":
                    drawn.append(random.choice(files))
                else:
                    drawn.extend(random.sample(files, min(10, len(files))))
    return drawn
