"""Ranked-list pictures: a few queries, each beside its top gallery images framed green (the
query's identity) or red (another), with the score of each image printed below it.

The figure VI-ReID papers show. Which queries of a trial are drawn is a fixed rule of their
identities and cameras (:func:`choose_queries`), so an evaluation repeated during training draws
the same queries each time; what a trial ranked becomes :class:`RankedList` rows
(:func:`trial_ranked_lists`); one drawing (:func:`draw_ranked_lists`) serves the evaluation and
the serving client's ``search``. NumPy and PIL only.

Examples:

>>> lists = trial_ranked_lists(split, distances, protocol, images_by_path)  # doctest: +SKIP
>>> write_png(draw_ranked_lists(lists, title="infrared_to_visible, step 400"), "ranked.png")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lba_tf.data.records import TestSplit
from lba_tf.evaluation.protocols import EvaluationProtocol, split_labels

QUERIES = 6
"""Queries drawn per direction."""
TOP_K = 10
"""Gallery images drawn per query."""
MIN_CELL_HEIGHT = 128
"""Images smaller than this are enlarged (by a whole factor) to at least this height."""
LEAST_DECIMALS, MOST_DECIMALS = 4, 8
"""Scores get at least 4 decimals, more until neighbours differ; 8 tells apart any two float32
values near 1 (their spacing there is 6e-8)."""

RIGHT = (0, 170, 0)
WRONG = (220, 20, 20)
UNKNOWN = (160, 160, 160)
QUERY = (40, 90, 210)
TEXT = (0, 0, 0)
FONT_SIZE = 13
MARGIN, GAP, QUERY_GAP = 8, 6, 18


@dataclasses.dataclass(frozen=True)
class RankedList:
    """One query and the top of its ranked gallery, as a picture shows them.

    Args:
        query: uint8 ``[H, W, 3]`` or ``[H, W]`` (grey).
        gallery: the top gallery images, best first, each like ``query``.
        scores: ``[k]`` what the gallery was ranked by (e.g. cosine similarity), best first.
        query_pid: the query's identity, or None when unknown.
        gallery_pids: the identity of each gallery image (None for an unknown one), or None
            when none is known.
        first_right: the 1-based rank of the first right match in the whole ranked list, 0 if
            the ranked gallery holds none, None if unknown.
        note: a short line under the query (e.g. ``"infrared cam3"``).
    """

    query: np.ndarray
    gallery: Sequence[np.ndarray]
    scores: Sequence[float]
    query_pid: Hashable | None = None
    gallery_pids: Sequence[Hashable | None] | None = None
    first_right: int | None = None
    note: str = ""

    def verdicts(self) -> list[bool | None]:
        """Per gallery image: True if its identity is the query's, False if another, None if
        either is unknown."""
        pids = self.gallery_pids if self.gallery_pids is not None else [None] * len(self.gallery)
        return [None if self.query_pid is None or pid is None else pid == self.query_pid for pid in pids]


@dataclasses.dataclass(frozen=True)
class RankedLists:
    """The ranked lists of a few queries and what their scores are.

    Args:
        rows: one :class:`RankedList` per query.
        score_name: what ``scores`` are, for the legend (``"cosine similarity"``).
    """

    rows: Sequence[RankedList]
    score_name: str = "cosine similarity"


def choose_queries(pids: Sequence[Hashable], cameras: Sequence[Hashable], count: int = QUERIES) -> list[int]:
    """Which queries to draw: ``count`` of them, spread over identities and cameras.

    The distinct identities are sorted and ``count`` of them taken at evenly spaced positions
    (the first and the last included: position ``round(j (n - 1) / (count - 1))``, halves up,
    of ``n``). Each gives its first query in the camera of its own that has been drawn least so
    far (the lowest on a tie), so every query camera appears once identities allow it. With
    fewer identities than ``count``, further queries follow round by round, one more of each
    identity (its next in query order) per round. The choice depends on the labels alone, so it
    is the same at every evaluation.

    Args:
        pids: ``[Q]`` the queries' identities.
        cameras: ``[Q]`` their cameras.
        count: how many to choose.

    Returns:
        ``min(count, Q)`` query indices, grouped by identity (in sorted identity order), in query
        order within one.
    """
    pids, cameras = list(pids), list(cameras)
    by_identity: dict[Hashable, list[int]] = {}
    for index, pid in enumerate(pids):
        by_identity.setdefault(pid, []).append(index)
    identities = sorted(by_identity)
    n, k = len(identities), min(count, len(identities))
    if k < 1:
        return []
    # integer arithmetic: float rounding could give two positions the same identity
    spaced = [identities[(2 * j * (n - 1) + k - 1) // (2 * (k - 1)) if k > 1 else 0] for j in range(k)]
    drawn: dict[Hashable, int] = {}
    queues = []
    for pid in spaced:
        indices = by_identity[pid]
        camera = min(sorted({cameras[i] for i in indices}), key=lambda c: drawn.get(c, 0))
        drawn[camera] = drawn.get(camera, 0) + 1
        first = next(i for i in indices if cameras[i] == camera)
        queues.append([first] + [i for i in indices if i != first])
    chosen = []
    for rank in range(max(len(queue) for queue in queues)):
        chosen += [queue[rank] for queue in queues if rank < len(queue)][: count - len(chosen)]
    position = {pid: p for p, pid in enumerate(spaced)}
    return sorted(chosen, key=lambda i: (position[pids[i]], i))


def rank_row(distances: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept gallery indices of one query by ascending distance, ties in gallery order (as
    ``lba_tf.evaluation.metrics`` ranks them)."""
    kept = np.flatnonzero(keep)
    return kept[np.argsort(np.asarray(distances)[kept], kind="stable")]


def first_right_rank(ranked_pids: Sequence[Hashable | None], query_pid: Hashable | None) -> int | None:
    """The 1-based position of ``query_pid`` in ``ranked_pids``, 0 if absent, None if the query's
    identity is unknown."""
    if query_pid is None:
        return None
    return next((rank for rank, pid in enumerate(ranked_pids, start=1) if pid == query_pid), 0)


def trial_ranked_lists(
    split: TestSplit,
    distances: np.ndarray,
    protocol: EvaluationProtocol,
    images: Mapping[str, np.ndarray],
    *,
    count: int = QUERIES,
    top_k: int = TOP_K,
    similarity: bool = True,
) -> RankedLists:
    """The ranked lists of a trial's chosen queries (:func:`choose_queries`), as scored.

    Each query ranks the gallery images its protocol keeps for it (SYSU-MM01 drops camera 2
    for camera-3 queries, LLCM the query's own identity and camera), by the distances the
    metrics were computed from; the first right match's rank counts images, not the distinct
    identities of the SYSU-MM01 and LLCM CMC.

    Args:
        split: the trial.
        distances: ``[Q, G]`` its distances, smaller = more similar.
        protocol: the dataset's protocol (its exclusions).
        images: uint8 ``[H, W, 3]`` by record path, for every query and gallery record; the
            drawn ones are copied, so the lists do not hold ``images`` alive.
        count: queries to draw.
        top_k: gallery images per query.
        similarity: the distances are negated similarities (``-q . g``), shown as similarities;
            otherwise (re-ranked) the distances are shown.

    Returns:
        :class:`RankedLists` of up to ``count`` rows.
    """
    query_pids, gallery_pids, query_cams, gallery_cams = split_labels(split)
    chosen = choose_queries(query_pids, query_cams, count)
    keep = protocol.keep_mask(query_pids[chosen], query_cams[chosen], gallery_pids, gallery_cams)
    rows = []
    for row, index in enumerate(chosen):
        order = rank_row(distances[index], keep[row])
        top = order[:top_k]
        values = np.asarray(distances[index], np.float64)[top]
        record = split.query[index]
        rows.append(
            RankedList(
                query=np.array(images[record.path]),
                gallery=[np.array(images[split.gallery[j].path]) for j in top],
                scores=(-values if similarity else values).tolist(),
                query_pid=int(query_pids[index]),
                gallery_pids=[int(pid) for pid in gallery_pids[top]],
                first_right=first_right_rank(gallery_pids[order].tolist(), int(query_pids[index])),
                note=f"{record.modality} cam{record.camera}",
            )
        )
    return RankedLists(rows, "cosine similarity" if similarity else "re-ranked distance")


def score_decimals(rows: Sequence[Sequence[float]], least: int = LEAST_DECIMALS, most: int = MOST_DECIMALS) -> int:
    """The fewest decimals, from ``least`` to ``most``, that tell apart the neighbouring scores of
    every row that differ (one count for all rows, so that they compare).

    Two neighbours are told apart when they print differently and differ by at least half a unit
    of the last decimal: 0.99987 and 0.99985 would print as 0.9999 and 0.9998 at four decimals, a
    gap five times theirs, so they take five. Embeddings of one person are near each other, so
    their cosine similarities can all begin with 0.999. Equal (and non-finite) neighbours ask for
    nothing.

    Args:
        rows: each query's scores, in ranked order.
        least, most: the range of the answer.
    """
    pairs = [
        (a, b)
        for row in rows
        for a, b in zip(list(row)[:-1], list(row)[1:])
        if a != b and math.isfinite(a) and math.isfinite(b)
    ]
    for decimals in range(least, most):
        if all(
            abs(a - b) >= 0.5 * 10.0**-decimals and format_score(a, decimals) != format_score(b, decimals)
            for a, b in pairs
        ):
            return decimals
    return most


def format_score(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals (``0.99987``); -0.0 prints as 0."""
    return f"{value + 0.0:.{decimals}f}"


def enlargement(height: int, min_height: int = MIN_CELL_HEIGHT) -> int:
    """The least whole factor that makes ``height`` at least ``min_height`` (1 for images that
    are tall enough)."""
    return max(1, math.ceil(min_height / height))


def enlarged_size(size: tuple[int, int], min_height: int = MIN_CELL_HEIGHT) -> tuple[int, int]:
    """``(height, width)`` times :func:`enlargement` of the height."""
    height, width = size
    factor = enlargement(height, min_height)
    return height * factor, width * factor


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _fit(image: np.ndarray, cell: tuple[int, int]) -> Image.Image:
    """The image at the cell's size: whole-factor enlargements by repeating pixels (the pixels the
    model saw, as blocks), any other size by bicubic resampling."""
    height, width = image.shape[:2]
    picture = Image.fromarray(_rgb(image))
    if (height, width) == cell:
        return picture
    whole = cell[0] % height == 0 and cell[1] % width == 0 and cell[0] // height == cell[1] // width
    return picture.resize((cell[1], cell[0]), Image.NEAREST if whole else Image.BICUBIC)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0: only the fixed bitmap font
        return ImageFont.load_default()


def _query_caption(row: RankedList) -> list[str]:
    lines = ["query" if row.query_pid is None else f"query id {row.query_pid}"]
    if row.note:
        lines.append(row.note)
    if row.first_right == 0:
        lines.append("no right match")
    elif row.first_right is not None and row.first_right > len(row.gallery):
        lines.append(f"1st right: rank {row.first_right}")
    return lines


def _gallery_caption(rank: int, score: float, pid, decimals: int) -> list[str]:
    return [format_score(score, decimals), f"#{rank}" + ("" if pid is None else f" id {pid}")]


def draw_ranked_lists(
    ranked: RankedLists, title: str = "", cell: tuple[int, int] | None = None, min_height: int = MIN_CELL_HEIGHT
) -> np.ndarray:
    """A picture of ranked lists: one row per query, the query framed blue, then its gallery
    images best first, framed green (right identity), red (wrong) or grey (unknown), each with
    its score and rank (and identity) below; under the query its identity, ``note`` and, when
    not among those drawn, the rank of its first right match.

    Args:
        ranked: the rows and what their scores are.
        title: a first line (e.g. the direction and step).
        cell: ``(height, width)`` every image is drawn at; by default the first query's size
            enlarged to at least ``min_height`` (:func:`enlarged_size`).
        min_height: see ``cell``.

    Returns:
        uint8 ``[height, width, 3]``.
    """
    rows = list(ranked.rows)
    if not rows:
        raise ValueError("no ranked lists to draw")
    cell = cell or enlarged_size(rows[0].query.shape[:2], min_height)
    frame = max(4, cell[0] // 24)
    font = _font(FONT_SIZE)
    line = FONT_SIZE + 4
    decimals = score_decimals([list(row.scores) for row in rows])
    captions = [
        [_query_caption(row)]
        + [
            _gallery_caption(rank, score, pid, decimals)
            for rank, (score, pid) in enumerate(zip(row.scores, row.gallery_pids or [None] * len(row.gallery)), start=1)
        ]
        for row in rows
    ]
    texts = [text for row in captions for lines in row for text in lines]
    column = max(cell[1] + 2 * frame, *(math.ceil(font.getlength(text)) + 2 for text in texts))
    columns = max(len(row.gallery) for row in rows)
    caption_height = line * max(len(lines) for row in captions for lines in row)
    row_height = cell[0] + 2 * frame + 2 + caption_height + GAP
    unknown = any(v is None for row in rows for v in row.verdicts())
    legend = (
        "blue: query; green: right identity, red: wrong"
        + (", grey: unknown" if unknown else "")
        + f"; below: {ranked.score_name}, rank"
    )
    header = [text for text in (title, legend) if text]
    width = 2 * MARGIN + (columns + 1) * column + columns * GAP + QUERY_GAP
    width = max(width, 2 * MARGIN + max(math.ceil(font.getlength(text)) for text in header))
    top = MARGIN + line * len(header) + GAP
    canvas = Image.new("RGB", (width, top + len(rows) * row_height + MARGIN - GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(header):
        draw.text((MARGIN, MARGIN + i * line), text, fill=TEXT, font=font)
    for r, (row, row_captions) in enumerate(zip(rows, captions)):
        y = top + r * row_height
        colours = [RIGHT if v else WRONG if v is not None else UNKNOWN for v in row.verdicts()]
        cells = [(row.query, QUERY)] + list(zip(row.gallery, colours))
        for c, ((image, colour), lines) in enumerate(zip(cells, row_captions)):
            x = MARGIN + c * (column + GAP) + (QUERY_GAP if c else 0)
            left = x + (column - cell[1] - 2 * frame) // 2
            draw.rectangle([left, y, left + cell[1] + 2 * frame - 1, y + cell[0] + 2 * frame - 1], fill=colour)
            canvas.paste(_fit(image, cell), (left + frame, y + frame))
            for i, text in enumerate(lines):
                text_x = x + (column - font.getlength(text)) / 2
                draw.text((text_x, y + cell[0] + 2 * frame + 2 + i * line), text, fill=TEXT, font=font)
    return np.asarray(canvas)


def write_png(picture: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Write ``picture`` (uint8 ``[H, W, 3]``) as a PNG, whole or not at all; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(picture).save(tmp, format="PNG")
    tmp.replace(path)
    return path
