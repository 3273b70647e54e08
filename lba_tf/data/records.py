"""Records: what a dataset reader hands to the input pipeline and to the evaluation protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from lba_tf.evaluation.protocols import EvaluationProtocol

Modality = Literal["visible", "infrared"]
Direction = Literal["visible_to_infrared", "infrared_to_visible"]
MODALITY_INDEX: dict[str, int] = {"visible": 0, "infrared": 1}
"""Integer code of each modality, as the model and the serving signature take it."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Args:
        path: the image file, relative to the dataset root.
        pid: the person identity as the dataset names it.
        camera: the camera number (SYSU-MM01 ``cam3`` -> 3; RegDB: 1 for queries, 2 for gallery).
        modality: ``"visible"`` or ``"infrared"``.
        label: the training label 0..num_classes-1, or -1 outside the training set.
    """

    path: str
    pid: int
    camera: int
    modality: Modality
    label: int = -1


@dataclasses.dataclass(frozen=True)
class IdentityFolder:
    """The images of one identity in one camera: ``<camera folder>/<pid as 4 digits>``.

    Args:
        path: the folder, relative to the dataset root (e.g. ``"cam3/0007"``).
        pid: the identity.
        camera: the camera number.
        modality: ``"visible"`` or ``"infrared"``.
        files: the folder's file names, sorted.
    """

    path: str
    pid: int
    camera: int
    modality: Modality
    files: tuple[str, ...]

    def record(self, name: str) -> ImageRecord:
        """The test record (label -1) of file ``name`` of this folder."""
        return ImageRecord(f"{self.path}/{name}", self.pid, self.camera, self.modality)


def all_images(folders: Iterable[IdentityFolder]) -> tuple[ImageRecord, ...]:
    """Every image of ``folders``, folder by folder, files in sorted order."""
    return tuple(folder.record(name) for folder in folders for name in folder.files)


@dataclasses.dataclass(frozen=True)
class TestSplit:
    """Query and gallery of one evaluation trial, in the protocol's order.

    Args:
        direction: the dataset's name of the direction, as the literature reports it.
        trial: the trial index (0-based for random galleries; the RegDB split number for RegDB).
        query: records of the images that rank the gallery, each a row of the score matrix.
        gallery: records of the images ranked. The roles are those scored, which is not always
            what the direction's name suggests: LLCM's ``visible_to_infrared`` queries with the
            drawn infrared images (see ``lba_tf.evaluation.protocols.LLCMProtocol``).
    """

    __test__ = False  # not a pytest class

    direction: Direction
    trial: int
    query: Sequence[ImageRecord]
    gallery: Sequence[ImageRecord]


class ReIDDataset(Protocol):
    """What every dataset reader provides (SYSU-MM01, RegDB, LLCM, synthetic).

    Attributes:
        root: the dataset folder; record paths are relative to it.
        protocol: the dataset's evaluation protocol (``lba_tf.evaluation.protocols``): its
            directions, how it splits ``test_images`` into queries and galleries, and how it
            scores them.
        train: every training image, both modalities, with labels 0..num_classes-1.
        num_classes: the number of training identities.
        test_images: the test images by modality, as the protocol takes them: identity folders
            (SYSU-MM01, LLCM: ``{modality: [IdentityFolder]}``) or listed records (RegDB:
            ``{modality: [ImageRecord]}``), in the protocol's order.
    """

    root: str
    protocol: EvaluationProtocol
    train: Sequence[ImageRecord]
    num_classes: int
    test_images: Mapping[Modality, Sequence[IdentityFolder] | Sequence[ImageRecord]]
