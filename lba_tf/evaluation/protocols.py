"""The evaluation protocols of SYSU-MM01, RegDB and LLCM, one object each: splits, exclusions, CMC.

Each protocol object answers, for its dataset, what the published protocol fixes (README, Directions):

- ``directions`` and ``roles``: which test images are the queries (the rows of the score matrix,
  each ranking the gallery) and which the gallery, in each direction;
- ``test_splits``: the query and gallery of every trial, from the test images its reader found
  (random galleries drawn as the VI-ReID literature draws them, or RegDB's fixed lists);
- ``keep_mask``: the gallery entries each query may be matched against (the exclusion rule);
- ``collapse_identities``: the CMC variant.

The metrics (``lba_tf.evaluation.metrics``) take the last two from the protocol object; the
chance level of a split is scored under them (``lba_tf.evaluation.results.chance_level``).
Dataset readers (``lba_tf.data.datasets``) read the layouts and name their protocol.

Examples:

>>> protocol = get_protocol("sysu")
>>> protocol.directions
('infrared_to_visible',)
>>> splits = dataset.protocol.test_splits(dataset.test_images, "infrared_to_visible", 10)  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from lba_tf.data.records import Direction, IdentityFolder, ImageRecord, Modality, TestSplit, all_images

GALLERY_SHOTS = ("single", "multi")
MULTI_SHOT_IMAGES = 10
"""Images per identity and camera in a multi-shot gallery."""


@dataclasses.dataclass(frozen=True)
class Roles:
    """What one direction scores.

    Args:
        query: the modality of the queries, the images that rank the gallery.
        gallery: the modality of the gallery, the images ranked.
        drawn: the modality of which one image (or ten, multi-shot) per identity and camera is
            drawn for each trial; ``None`` where the lists are fixed (RegDB).
    """

    query: Modality
    gallery: Modality
    drawn: Modality | None = None


class EvaluationProtocol(abc.ABC):
    """How one dataset is evaluated; subclasses are the protocols.

    Attributes:
        name: the protocol's name for ``lba_tf.evaluation.evaluate`` (``"sysu"``, ...).
        title: the dataset's name in messages.
        roles: ``{direction: Roles}``, the directions in the order they are reported.
        collapse_identities: the CMC variant. True: the community's variant, which collapses the
            ranked list (after exclusion) to its distinct identities in order of first
            appearance; False: the plain cumulative match on the ranked list.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    roles: ClassVar[Mapping[Direction, Roles]]
    collapse_identities: ClassVar[bool]

    @property
    def directions(self) -> tuple[Direction, ...]:
        """The directions this dataset is evaluated in."""
        return tuple(self.roles)

    def roles_of(self, direction: Direction) -> Roles:
        """The roles of ``direction``; ``ValueError`` if the dataset is not evaluated in it."""
        if direction not in self.roles:
            raise ValueError(f"{self.title} is evaluated in {', '.join(self.roles)}; got direction {direction!r}")
        return self.roles[direction]

    @abc.abstractmethod
    def keep_mask(
        self, query_pids: np.ndarray, query_cams: np.ndarray, gallery_pids: np.ndarray, gallery_cams: np.ndarray
    ) -> np.ndarray:
        """Which gallery entries each query may be matched against.

        Args:
            query_pids: ``[Q]`` identities.
            query_cams: ``[Q]`` camera numbers.
            gallery_pids: ``[G]`` identities.
            gallery_cams: ``[G]`` camera numbers.

        Returns:
            ``[Q, G]`` bool, False where the protocol excludes the gallery entry for the query.
        """

    @abc.abstractmethod
    def test_splits(
        self, test_images: Mapping[Modality, Sequence], direction: Direction, trials: int
    ) -> list[TestSplit]:
        """The query and gallery of each trial of ``direction``, in the protocol's order.

        Args:
            test_images: the reader's ``test_images``.
            direction: one of ``directions``.
            trials: the number of trials, at least 1.
        """


def split_labels(split: TestSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(query pids, gallery pids, query cameras, gallery cameras)`` of a split, int64 arrays in
    the order ``lba_tf.evaluation.evaluate`` takes them."""
    pids = [np.array([r.pid for r in side], np.int64) for side in (split.query, split.gallery)]
    cams = [np.array([r.camera for r in side], np.int64) for side in (split.query, split.gallery)]
    return pids[0], pids[1], cams[0], cams[1]


def check_trials(trials: int) -> None:
    """Raise ``ValueError`` unless ``trials`` is a positive integer."""
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")


def check_gallery_shots(gallery_shots: str) -> None:
    """Raise ``ValueError`` unless ``gallery_shots`` is ``"single"`` or ``"multi"``."""
    if gallery_shots not in GALLERY_SHOTS:
        raise ValueError(f"gallery_shots must be 'single' or 'multi', got {gallery_shots!r}")


def draw_gallery(folders: Sequence[IdentityFolder], trial: int, shots: str) -> tuple[ImageRecord, ...]:
    """The random gallery of one trial, drawn as the VI-ReID literature draws it.

    The draws are those of ``random.seed(trial)`` followed, folder by folder, by
    ``random.choice(files)`` (single-shot) or ``random.sample(files, min(10, len(files)))``
    (multi-shot), on a private generator so that the global ``random`` state is left untouched.

    Args:
        folders: the identity folders to draw from, in the protocol's order (sorted pid, then
            camera).
        trial: the trial number, the seed.
        shots: ``"single"`` or ``"multi"``.
    """
    check_gallery_shots(shots)
    rng = random.Random(trial)
    gallery = []
    for folder in folders:
        if shots == "single":
            names = [rng.choice(folder.files)]
        else:
            names = rng.sample(folder.files, min(MULTI_SHOT_IMAGES, len(folder.files)))
        gallery.extend(folder.record(name) for name in names)
    return tuple(gallery)


class RandomGalleryProtocol(EvaluationProtocol):
    """A protocol whose trials draw one modality's images anew (SYSU-MM01, LLCM).

    Every image of the other modality is used in every trial. ``test_images`` are the test
    identity folders by modality, each list in the protocol's order (sorted pid, then camera).
    """

    gallery_shots: str

    def test_splits(
        self, test_images: Mapping[Modality, Sequence[IdentityFolder]], direction: Direction, trials: int
    ) -> list[TestSplit]:
        """Trials ``0 .. trials - 1``; trial ``t`` draws with ``draw_gallery(..., t, ...)``."""
        roles = self.roles_of(direction)
        check_trials(trials)
        fixed = roles.gallery if roles.drawn == roles.query else roles.query
        every = all_images(test_images[fixed])
        splits = []
        for trial in range(trials):
            drawn = draw_gallery(test_images[roles.drawn], trial, self.gallery_shots)
            side = {roles.drawn: drawn, fixed: every}
            splits.append(TestSplit(direction, trial, side[roles.query], side[roles.gallery]))
        return splits


@dataclasses.dataclass(frozen=True)
class SYSUMM01Protocol(RandomGalleryProtocol):
    """SYSU-MM01: infrared queries against random single- or multi-shot RGB galleries.

    The queries are every image of the test identities in the IR cameras (3 and 6), by identity,
    camera and file name. Trial ``t``'s gallery is drawn with ``random.seed(t)`` from the RGB
    cameras of the search mode (``draw_gallery``). A query from camera 3 ignores gallery images
    from camera 2 (the two share a room); nothing else is excluded. CMC: the community's variant.

    Args:
        search_mode: ``"all"`` (gallery cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        gallery_shots: ``"single"`` (one image per identity and camera) or ``"multi"`` (ten).
    """

    name: ClassVar[str] = "sysu"
    title: ClassVar[str] = "SYSU-MM01"
    roles: ClassVar[Mapping[Direction, Roles]] = {
        "infrared_to_visible": Roles(query="infrared", gallery="visible", drawn="visible")
    }
    collapse_identities: ClassVar[bool] = True
    VISIBLE_CAMERAS: ClassVar[Mapping[str, tuple[int, ...]]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
    """Gallery cameras of each search mode, in the protocol's order."""
    INDOOR_INFRARED_CAMERA: ClassVar[int] = 3
    SAME_ROOM_VISIBLE_CAMERA: ClassVar[int] = 2

    search_mode: str = "all"
    gallery_shots: str = "single"

    def __post_init__(self):
        if self.search_mode not in self.VISIBLE_CAMERAS:
            raise ValueError(f"search_mode must be 'all' or 'indoor', got {self.search_mode!r}")
        check_gallery_shots(self.gallery_shots)

    def keep_mask(self, query_pids, query_cams, gallery_pids, gallery_cams) -> np.ndarray:
        """Everything but camera-2 gallery images for camera-3 queries (see the base class)."""
        return ~(
            (np.asarray(query_cams) == self.INDOOR_INFRARED_CAMERA)[:, None]
            & (np.asarray(gallery_cams) == self.SAME_ROOM_VISIBLE_CAMERA)[None, :]
        )


@dataclasses.dataclass(frozen=True)
class RegDBProtocol(EvaluationProtocol):
    """RegDB: one split's fixed test lists, in both directions.

    Each split trains its own model, so the one trial of a direction is the split itself.
    ``visible_to_infrared`` queries with ``test_visible_{t}`` against ``test_thermal_{t}``, and
    ``infrared_to_visible`` swaps them. Queries count as camera 1 and the gallery as camera 2, so
    nothing is excluded. CMC: the plain cumulative match.

    Args:
        trial: the RegDB split (1..10) the test lists come from.
    """

    name: ClassVar[str] = "regdb"
    title: ClassVar[str] = "RegDB"
    roles: ClassVar[Mapping[Direction, Roles]] = {
        "visible_to_infrared": Roles(query="visible", gallery="infrared"),
        "infrared_to_visible": Roles(query="infrared", gallery="visible"),
    }
    collapse_identities: ClassVar[bool] = False
    QUERY_CAMERA: ClassVar[int] = 1
    GALLERY_CAMERA: ClassVar[int] = 2

    trial: int = 1

    def keep_mask(self, query_pids, query_cams, gallery_pids, gallery_cams) -> np.ndarray:
        """Every gallery entry (see the base class)."""
        return np.ones((len(query_pids), len(gallery_pids)), dtype=bool)

    def test_splits(
        self, test_images: Mapping[Modality, Sequence[ImageRecord]], direction: Direction, trials: int = 1
    ) -> list[TestSplit]:
        """The split's query and gallery, as a one-element list.

        ``trials`` (at least 1) multiplies nothing: a RegDB split is not a random gallery. The
        split's ``trial`` is the RegDB split number.

        Args:
            test_images: ``{"visible": test_visible records, "infrared": test_thermal records}``.
            direction: ``"visible_to_infrared"`` or ``"infrared_to_visible"``.
            trials: accepted for the common interface; at least 1.
        """
        roles = self.roles_of(direction)
        check_trials(trials)
        query = tuple(dataclasses.replace(r, camera=self.QUERY_CAMERA) for r in test_images[roles.query])
        gallery = tuple(dataclasses.replace(r, camera=self.GALLERY_CAMERA) for r in test_images[roles.gallery])
        return [TestSplit(direction, self.trial, query, gallery)]


@dataclasses.dataclass(frozen=True)
class LLCMProtocol(RandomGalleryProtocol):
    """LLCM: both directions over random draws, as the LLCM authors' test script computes them.

    ``infrared_to_visible`` (their ``test_mode = [1, 2]``): every test_nir image (by pid, camera,
    file name) is a query ranking one test_vis image drawn per identity and camera.
    ``visible_to_infrared`` (``test_mode = [2, 1]``): their script calls the test_vis images the
    queries and the drawn test_nir images the gallery, but scores ``-gallery @ query.T`` with the
    gallery's labels and cameras first, so each drawn test_nir image ranks every test_vis image.
    The splits say what is scored: the queries are the drawn test_nir images and the gallery every
    test_vis image; the published LLCM "VIS to IR" numbers are this computation. Draws are those
    of SYSU-MM01 (``draw_gallery``). Entries with the query's identity and camera number are
    excluded. CMC: the community's variant.

    Args:
        gallery_shots: ``"single"`` (one image per identity and camera) or ``"multi"`` (ten).
    """

    name: ClassVar[str] = "llcm"
    title: ClassVar[str] = "LLCM"
    roles: ClassVar[Mapping[Direction, Roles]] = {
        "visible_to_infrared": Roles(query="infrared", gallery="visible", drawn="infrared"),
        "infrared_to_visible": Roles(query="infrared", gallery="visible", drawn="visible"),
    }
    collapse_identities: ClassVar[bool] = True

    gallery_shots: str = "single"

    def __post_init__(self):
        check_gallery_shots(self.gallery_shots)

    def keep_mask(self, query_pids, query_cams, gallery_pids, gallery_cams) -> np.ndarray:
        """Everything but the query's own identity in its own camera (see the base class)."""
        query_pids, query_cams = np.asarray(query_pids), np.asarray(query_cams)
        gallery_pids, gallery_cams = np.asarray(gallery_pids), np.asarray(gallery_cams)
        return ~((query_pids[:, None] == gallery_pids[None, :]) & (query_cams[:, None] == gallery_cams[None, :]))


PROTOCOLS: dict[str, EvaluationProtocol] = {
    protocol.name: protocol for protocol in (SYSUMM01Protocol(), RegDBProtocol(), LLCMProtocol())
}
"""Each protocol by name, with its default options (scoring does not depend on them)."""


def get_protocol(protocol: str | EvaluationProtocol) -> EvaluationProtocol:
    """The protocol object of a name in ``PROTOCOLS``, or ``protocol`` itself if it is one.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(protocol, EvaluationProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {tuple(PROTOCOLS)}")
    return PROTOCOLS[protocol]
