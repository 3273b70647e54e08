"""Ranked-list pictures: which queries are drawn, how a trial's rows are ranked under the
protocol's exclusions, how many decimals the scores need, and the frames' colours."""

import numpy as np
import pytest
from PIL import Image

from lba_tf.data.records import ImageRecord, TestSplit
from lba_tf.evaluation.protocols import SYSUMM01Protocol
from lba_tf.evaluation.ranked_lists import (
    QUERY,
    RIGHT,
    UNKNOWN,
    WRONG,
    RankedList,
    RankedLists,
    choose_queries,
    draw_ranked_lists,
    enlarged_size,
    first_right_rank,
    rank_row,
    score_decimals,
    trial_ranked_lists,
    write_png,
)


def test_choose_queries_spreads_over_identities_and_both_cameras():
    pids = [7, 7, 3, 3, 5, 9, 9, 9, 1]
    cams = [3, 6, 6, 3, 3, 6, 3, 6, 6]
    # identities 1, 3, 5, 7, 9: three evenly spaced are positions 0, 2, 4 -> 1, 5, 9. Identity 1
    # has cam6 only (index 8), 5 cam3 only (index 4); 9 has both, each drawn once so far, so the
    # lower, cam3: its query 6, not its first query 5 (cam6)
    assert choose_queries(pids, cams, 3) == [8, 4, 6]
    assert choose_queries(pids, cams, 3) == choose_queries(list(pids), list(cams), 3)
    assert {cams[i] for i in choose_queries(pids, cams, 3)} == {3, 6}
    # all five, the cameras balanced as they go: 1 cam6 (8); 3 cam3 (3); 5 cam3 (4); 7 cam6, drawn
    # less (1, not 0); 9 cam3 on the tie (6)
    assert choose_queries(pids, cams, 5) == [8, 3, 4, 1, 6]


def test_choose_queries_with_few_identities_adds_their_further_queries_round_by_round():
    pids = [2, 2, 2, 4, 4]
    cams = [3, 3, 6, 6, 3]
    # identity 2 first in cam3 (index 0); identity 4 then in cam6, drawn less (index 3); round two
    # adds 1 and 4; grouped by identity, in query order
    assert choose_queries(pids, cams, 4) == [0, 1, 3, 4]
    assert choose_queries(pids, cams, 6) == [0, 1, 2, 3, 4]
    assert choose_queries(pids, cams, 1) == [0]
    assert choose_queries([], [], 6) == [] and choose_queries(pids, cams, 0) == []


def test_rank_row_keeps_gallery_order_among_ties_and_drops_the_excluded():
    distances = np.array([0.5, 0.2, 0.5, 0.2, 0.1])
    assert rank_row(distances, np.ones(5, bool)).tolist() == [4, 1, 3, 0, 2]
    assert rank_row(distances, np.array([True, True, True, False, True])).tolist() == [4, 1, 0, 2]


def test_first_right_rank_counts_images_from_one():
    assert first_right_rank([5, 3, 3, 7], 3) == 2
    assert first_right_rank([5, 7], 3) == 0
    assert first_right_rank([5, 3], None) is None


@pytest.mark.parametrize(
    "rows,decimals",
    [
        ([[0.99987, 0.99985]], 5),  # 0.9999 and 0.9998 at four would be a gap five times theirs
        ([[0.9991, 0.9990, 0.5]], 4),
        ([[0.99987, 0.99987, 0.99987]], 4),  # equal neighbours ask for nothing
        ([[0.9, 0.8], [0.99987, 0.99985]], 5),  # one count for every row
        ([[0.00024, 0.00016]], 5),  # far enough apart at four, but both print 0.0002
        ([[0.12345678, 0.12345679]], 8),
        ([[1.0, 1.0 - 1e-12]], 8),  # never more than eight
        ([[0.5, float("nan"), 0.4]], 4),
    ],
)
def test_score_decimals_tell_neighbours_apart(rows, decimals):
    assert score_decimals(rows) == decimals


def _record(path, pid, camera, modality):
    return ImageRecord(path, pid, camera, modality)


def _flat(value, size=(8, 4)):
    return np.full((*size, 3), value, np.uint8)


def test_trial_ranked_lists_rank_under_the_sysu_exclusion():
    query = [_record("cam3/0001/0001.jpg", 1, 3, "infrared"), _record("cam6/0002/0001.jpg", 2, 6, "infrared")]
    gallery = [
        _record("cam1/0001/0001.jpg", 1, 1, "visible"),
        _record("cam2/0002/0001.jpg", 2, 2, "visible"),
        _record("cam2/0001/0001.jpg", 1, 2, "visible"),
        _record("cam4/0002/0001.jpg", 2, 4, "visible"),
    ]
    split = TestSplit("infrared_to_visible", 0, query, gallery)
    distances = np.array([[0.3, 0.1, 0.05, 0.2], [0.4, 0.1, 0.2, 0.1]], np.float32)
    images = {r.path: _flat(10 * i) for i, r in enumerate(query + gallery)}
    ranked = trial_ranked_lists(split, distances, SYSUMM01Protocol(), images, top_k=3)
    assert ranked.score_name == "cosine similarity"
    first, second = ranked.rows
    # cam3 query: the cam2 images (gallery 1 and 2, the two nearest) are not its to rank
    assert first.gallery_pids == [2, 1] and first.first_right == 2
    np.testing.assert_allclose(first.scores, [-0.2, -0.3], rtol=1e-6)
    assert first.query_pid == 1 and first.note == "infrared cam3"
    np.testing.assert_array_equal(first.query, images[query[0].path])
    np.testing.assert_array_equal(first.gallery[0], images[gallery[3].path])
    assert not np.shares_memory(first.gallery[0], images[gallery[3].path])
    # cam6 query: everything, the tie at 0.1 in gallery order (1, then 3)
    assert second.gallery_pids == [2, 2, 1] and second.first_right == 1
    np.testing.assert_allclose(second.scores, [-0.1, -0.1, -0.2], rtol=1e-6)
    assert first.verdicts() == [False, True] and second.verdicts() == [True, True, False]
    reranked = trial_ranked_lists(split, distances, SYSUMM01Protocol(), images, top_k=3, similarity=False)
    assert reranked.score_name == "re-ranked distance"
    np.testing.assert_allclose(reranked.rows[0].scores, [0.2, 0.3], rtol=1e-6)


def _bounding_box(picture, colour):
    ys, xs = np.nonzero(np.all(picture == colour, axis=-1))
    return ys.min(), ys.max(), xs.min(), xs.max()


def _frame_colour(picture, image_colour):
    """The colour just outside the image drawn in ``image_colour``, left of its middle."""
    top, bottom, left, _ = _bounding_box(picture, image_colour)
    return tuple(picture[(top + bottom) // 2, left - 2])


def _rows(count, gallery_pids=(1, 2, None)):
    return [
        RankedList(
            query=_flat((200, 0, 200 - r)),
            gallery=[_flat((0, 50 + 10 * r + k, 250)) for k in range(len(gallery_pids))],
            scores=[0.99987, 0.99985, 0.5][: len(gallery_pids)],
            query_pid=1,
            gallery_pids=list(gallery_pids),
            first_right=1,
            note="infrared cam3",
        )
        for r in range(count)
    ]


def test_draw_ranked_lists_frames_right_green_wrong_red_unknown_grey():
    picture = draw_ranked_lists(RankedLists(_rows(2)), title="infrared_to_visible, step 4")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert _frame_colour(picture, (200, 0, 200)) == QUERY
    assert _frame_colour(picture, (0, 50, 250)) == RIGHT
    assert _frame_colour(picture, (0, 51, 250)) == WRONG
    assert _frame_colour(picture, (0, 52, 250)) == UNKNOWN
    assert _frame_colour(picture, (0, 62, 250)) == UNKNOWN  # second row
    # the 8 x 4 images are enlarged whole-factor to 128 x 64, pixels repeated
    top, bottom, left, right = _bounding_box(picture, (0, 50, 250))
    assert (bottom - top + 1, right - left + 1) == enlarged_size((8, 4)) == (128, 64)


def test_draw_ranked_lists_grows_by_one_row_per_query():
    one = draw_ranked_lists(RankedLists(_rows(1)))
    three = draw_ranked_lists(RankedLists(_rows(3)))
    assert one.shape[1] == three.shape[1]
    row_height = (three.shape[0] - one.shape[0]) / 2
    assert row_height == int(row_height) and row_height > 128
    with pytest.raises(ValueError, match="no ranked lists"):
        draw_ranked_lists(RankedLists([]))


def test_write_png_round_trips(tmp_path):
    picture = draw_ranked_lists(RankedLists(_rows(1, gallery_pids=(1,))))
    path = write_png(picture, tmp_path / "pictures" / "ranked.png")
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), picture)
    assert [p.name for p in path.parent.iterdir()] == ["ranked.png"]
