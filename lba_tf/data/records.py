"""Records: what a dataset reader hands to the input pipeline and to the evaluation protocol."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, Sequence

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
class TestSplit:
    """Query and gallery of one evaluation trial, in the protocol's order.

    Args:
        direction: the dataset's name of the direction, as the literature reports it.
        trial: the trial index (0-based for random galleries; the RegDB split number for RegDB).
        query: records of the images that rank the gallery, each a row of the score matrix.
        gallery: records of the images ranked. The roles are those scored, which is not always
            what the direction's name suggests: LLCM's ``visible_to_infrared`` queries with the
            drawn infrared images (see ``lba_tf.data.datasets.llcm.LLCM.test_splits``).
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
        protocol: the evaluation protocol name for ``lba_tf.evaluation.evaluate``:
            ``"sysu"``, ``"regdb"`` or ``"llcm"``.
        train: every training image, both modalities, with labels 0..num_classes-1.
        num_classes: the number of training identities.
        directions: the directions this dataset is evaluated in.
    """

    root: str
    protocol: str
    train: Sequence[ImageRecord]
    num_classes: int
    directions: tuple[Direction, ...]

    def test_splits(self, direction: Direction, trials: int) -> list[TestSplit]:
        """Query and gallery for each of ``trials`` trials of ``direction``."""
        ...
