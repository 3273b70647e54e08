"""Metrics: hand-computed cases, each exclusion rule, and parity with a per-query loop."""

import numpy as np
import pytest

from lba_tf.evaluation import metrics
from lba_tf.evaluation.metrics import evaluate, evaluate_features
from lba_tf.evaluation.protocols import PROTOCOLS


def reference_evaluate(distmat, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=20):
    """One query at a time, straight from the protocol text, in float64."""
    hits, aps, inps = [], [], []
    for q in range(len(q_pids)):
        kept = []
        for g in np.argsort(distmat[q], kind="stable"):
            if protocol == "sysu" and q_cams[q] == 3 and g_cams[g] == 2:
                continue
            if protocol == "llcm" and g_pids[g] == q_pids[q] and g_cams[g] == q_cams[q]:
                continue
            kept.append(g)
        is_match = [g_pids[g] == q_pids[q] for g in kept]
        if not any(is_match):
            continue
        found, precision_sum, last = 0, 0.0, -1
        for i, match in enumerate(is_match):
            if match:
                found += 1
                precision_sum += found / (i + 1)
                last = i
        aps.append(precision_sum / found)
        inps.append(found / (last + 1))
        ranked_ids = [g_pids[g] for g in kept]
        if protocol != "regdb":
            distinct = []
            for pid in ranked_ids:
                if pid not in distinct:
                    distinct.append(pid)
            ranked_ids = distinct
        first = ranked_ids.index(q_pids[q])
        hits.append([first < k for k in range(1, max_rank + 1)])
    return {
        "cmc": np.mean(np.array(hits, dtype=np.float64), axis=0),
        "mAP": np.mean(aps),
        "mINP": np.mean(inps),
        "num_valid_queries": len(aps),
    }


def random_case(protocol, seed, num_ids=12, match_bias=0.0, quantize=False):
    """Identities and cameras as the protocol's galleries have them, random distances.

    Some query identities are missing from the gallery, and for sysu some identities are only
    in camera 2, so queries without any valid match occur. ``match_bias`` pulls true matches
    forward; ``quantize`` rounds distances to force ties (in float32).
    """
    rng = np.random.default_rng(seed)
    if protocol == "sysu":
        query_cam_choices, gallery_cam_choices, per_cam = (3, 6), (1, 2, 4, 5), (1, 1)
    elif protocol == "llcm":
        query_cam_choices, gallery_cam_choices, per_cam = (1, 2, 4, 5), (1, 2, 3, 4, 5), (1, 3)
    else:
        query_cam_choices, gallery_cam_choices, per_cam = (1,), (2,), (3, 6)
    g_pids, g_cams = [], []
    for pid in range(num_ids - 2):  # the last two identities have no gallery image
        cams = [c for c in gallery_cam_choices if rng.random() < 0.7] or [gallery_cam_choices[0]]
        if protocol == "sysu" and pid % 5 == 0:
            cams = [2]
        for cam in cams:
            count = rng.integers(per_cam[0], per_cam[1] + 1)
            g_pids += [pid] * count
            g_cams += [cam] * count
    q_pids = rng.integers(0, num_ids, size=40)
    q_cams = rng.choice(query_cam_choices, size=40)
    g_pids, g_cams = np.array(g_pids), np.array(g_cams)
    distmat = rng.random((len(q_pids), len(g_pids)))
    distmat -= match_bias * (q_pids[:, None] == g_pids[None, :])
    if quantize:  # float32, as float32 features give, with many ties
        distmat = (np.round(distmat * 4) / 4).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def assert_same_result(result, expected):
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6, rtol=0)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
    assert result["num_valid_queries"] == expected["num_valid_queries"]


def assert_identical(result, expected):
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    assert result["mAP"] == expected["mAP"]
    assert result["mINP"] == expected["mINP"]
    assert result["num_valid_queries"] == expected["num_valid_queries"]


@pytest.mark.parametrize("protocol", tuple(PROTOCOLS))
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("match_bias,quantize", [(0.0, False), (0.0, True), (0.6, False), (0.6, True)])
def test_matches_per_query_reference(protocol, seed, match_bias, quantize):
    case = random_case(protocol, seed, match_bias=match_bias, quantize=quantize)
    expected = reference_evaluate(*case, protocol, max_rank=10)
    assert expected["num_valid_queries"] < len(case[1])  # skipping is exercised
    assert_same_result(evaluate(*case, protocol, max_rank=10), expected)


@pytest.mark.parametrize("protocol", tuple(PROTOCOLS))
def test_large_gallery_with_early_matches_matches_reference(protocol):
    # Many gallery images and true matches near the top: only a short prefix gets sorted.
    case = random_case(protocol, seed=7, num_ids=150, match_bias=0.95, quantize=True)
    expected = reference_evaluate(*case, protocol)
    assert_same_result(evaluate(*case, protocol), expected)


@pytest.mark.parametrize("protocol", tuple(PROTOCOLS))
def test_query_blocks_give_identical_results(protocol, monkeypatch):
    case = random_case(protocol, seed=3, num_ids=40, match_bias=0.5, quantize=True)
    full = evaluate(*case, protocol)
    distmat, *ids = case
    blocks = iter(np.array_split(distmat, [3, 4, 20]))
    assert_identical(metrics.evaluate_chunks(blocks, *ids, protocol), full)
    for elements in (1, 7 * distmat.shape[1]):  # scoring blocks of 1 and 7 rows
        monkeypatch.setattr(metrics, "SCORE_BLOCK_ELEMENTS", elements)
        assert_identical(evaluate(*case, protocol), full)


@pytest.mark.parametrize("protocol", tuple(PROTOCOLS))
def test_features_path_equals_full_matrix(protocol):
    _, q_pids, g_pids, q_cams, g_cams = random_case(protocol, seed=5, num_ids=30)
    rng = np.random.default_rng(0)
    # Small integer features: every dot product is exact in any summation order, and many tie.
    query = rng.integers(-2, 3, size=(len(q_pids), 6)).astype(np.float64)
    gallery = rng.integers(-2, 3, size=(len(g_pids), 6)).astype(np.float64)
    ids = (q_pids, g_pids, q_cams, g_cams)
    full = evaluate(-(query @ gallery.T), *ids, protocol)
    assert_same_result(full, reference_evaluate(-(query @ gallery.T), *ids, protocol))
    for chunk_size in (None, 1, 6):
        assert_identical(evaluate_features(query, gallery, *ids, protocol, chunk_size=chunk_size), full)
    normed_q = rng.standard_normal((len(q_pids), 16)).astype(np.float32)
    normed_g = rng.standard_normal((len(g_pids), 16)).astype(np.float32)
    normed_q /= np.linalg.norm(normed_q, axis=1, keepdims=True)
    normed_g /= np.linalg.norm(normed_g, axis=1, keepdims=True)
    assert_identical(
        evaluate_features(normed_q, normed_g, *ids, protocol, chunk_size=4),
        evaluate(-(normed_q @ normed_g.T), *ids, protocol),
    )


def one_query(distances, g_pids, g_cams, q_pid, q_cam, protocol, max_rank=5):
    return evaluate(
        np.array([distances], dtype=np.float64), [q_pid], g_pids, [q_cam], g_cams, protocol, max_rank=max_rank
    )


def test_hand_computed_ap_inp_and_both_cmc_variants():
    # Query id 1 (camera 6: no sysu exclusion). Ranked gallery ids: 2, 2, 3, 1, 1.
    # True matches at 0-based positions 3 and 4:
    #   AP = (1/4 + 2/5) / 2 = 0.325, mINP = 2 matches / rank 5 = 0.4.
    # Plain CMC (regdb): first match at position 3 -> hits from rank 4: [0, 0, 0, 1, 1].
    # Collapsed CMC (sysu): distinct ids 2, 3, 1 -> id 1 at position 2: [0, 0, 1, 1, 1].
    distances = [0.1, 0.2, 0.3, 0.4, 0.5]
    g_pids, g_cams = [2, 2, 3, 1, 1], [1, 4, 5, 1, 2]
    plain = one_query(distances, g_pids, g_cams, 1, 6, "regdb")
    collapsed = one_query(distances, g_pids, g_cams, 1, 6, "sysu")
    np.testing.assert_array_equal(plain["cmc"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(collapsed["cmc"], [0, 0, 1, 1, 1])
    for result in (plain, collapsed):
        assert result["mAP"] == pytest.approx(0.325)
        assert result["mINP"] == pytest.approx(0.4)
        assert result["num_valid_queries"] == 1


def test_two_queries_average():
    # Query A (id 1, camera 6): ranked ids 1, 2, 1, 2, 1 -> matches at 0, 2, 4:
    #   AP = (1/1 + 2/3 + 3/5) / 3 = 34/45, INP = 3/5, rank-1 hit.
    # Query B (id 2, camera 6): same ranking -> matches at 1, 3:
    #   AP = (1/2 + 2/4) / 2 = 1/2, INP = 2/4, first hit at collapsed position 1.
    distances = [[0.1, 0.2, 0.3, 0.4, 0.5]] * 2
    result = evaluate(np.array(distances), [1, 2], [1, 2, 1, 2, 1], [6, 6], [1, 1, 4, 2, 5], "sysu", max_rank=3)
    assert result["mAP"] == pytest.approx((34 / 45 + 1 / 2) / 2)
    assert result["mINP"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    np.testing.assert_allclose(result["cmc"], [0.5, 1.0, 1.0])


def test_sysu_camera3_query_ignores_camera2_gallery():
    # Ranked gallery (id, camera): (1,2) (2,1) (1,1) (2,2) (1,4); query id 1.
    # Camera 3 query drops camera 2: kept ids 2, 1, 1 -> matches at 1, 2:
    #   AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3, collapsed CMC [0, 1, 1].
    # Camera 6 query keeps all: ids 1, 2, 1, 2, 1 -> AP = 34/45, INP = 3/5, CMC [1, 1, 1].
    distances = [0.1, 0.2, 0.3, 0.4, 0.5]
    g_pids, g_cams = [1, 2, 1, 2, 1], [2, 1, 1, 2, 4]
    cam3 = one_query(distances, g_pids, g_cams, 1, 3, "sysu", max_rank=3)
    cam6 = one_query(distances, g_pids, g_cams, 1, 6, "sysu", max_rank=3)
    assert cam3["mAP"] == pytest.approx(7 / 12)
    assert cam3["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(cam3["cmc"], [0, 1, 1])
    assert cam6["mAP"] == pytest.approx(34 / 45)
    assert cam6["mINP"] == pytest.approx(3 / 5)
    np.testing.assert_array_equal(cam6["cmc"], [1, 1, 1])


def test_sysu_excludes_nothing_else():
    # Same identity and same camera is excluded by llcm but not by sysu (query camera 1 here).
    distances = [0.1, 0.2, 0.3]
    g_pids, g_cams = [1, 2, 1], [1, 1, 2]
    # sysu keeps all: matches at 0, 2 -> AP = (1 + 2/3) / 2 = 5/6.
    assert one_query(distances, g_pids, g_cams, 1, 1, "sysu")["mAP"] == pytest.approx(5 / 6)
    # llcm drops (1, camera 1): ids 2, 1 -> match at 1 -> AP = 1/2.
    assert one_query(distances, g_pids, g_cams, 1, 1, "llcm")["mAP"] == pytest.approx(1 / 2)


def test_llcm_ignores_same_identity_same_camera_only():
    # Query id 1 camera 2. Ranked (id, camera): (1,2) (3,2) (1,5) (1,2) (4,1).
    # llcm drops both (1,2) entries, keeps (3,2) (other identity, same camera):
    #   kept ids 3, 1, 4 -> match at 1: AP = 1/2, INP = 1/2, CMC [0, 1, 1].
    # regdb keeps everything: matches at 0, 2, 3 -> AP = (1 + 2/3 + 3/4) / 3 = 29/36, INP = 3/4.
    distances = [0.1, 0.2, 0.3, 0.4, 0.5]
    g_pids, g_cams = [1, 3, 1, 1, 4], [2, 2, 5, 2, 1]
    llcm = one_query(distances, g_pids, g_cams, 1, 2, "llcm", max_rank=3)
    regdb = one_query(distances, g_pids, g_cams, 1, 2, "regdb", max_rank=3)
    assert llcm["mAP"] == pytest.approx(1 / 2)
    assert llcm["mINP"] == pytest.approx(1 / 2)
    np.testing.assert_array_equal(llcm["cmc"], [0, 1, 1])
    assert regdb["mAP"] == pytest.approx(29 / 36)
    assert regdb["mINP"] == pytest.approx(3 / 4)
    np.testing.assert_array_equal(regdb["cmc"], [1, 1, 1])


def test_regdb_excludes_nothing_even_with_equal_cameras():
    # Same identity, same camera number: regdb still counts it (match at 0 -> AP = 1).
    result = one_query([0.1, 0.2], [1, 2], [1, 1], 1, 1, "regdb")
    assert result["mAP"] == 1.0
    assert result["cmc"][0] == 1.0


def test_query_without_match_left_is_skipped():
    # Query A (id 1, camera 3): its only gallery image is in camera 2 -> skipped.
    # Query B (id 2, camera 6): ranked ids 1, 2 -> AP = 1/2, INP = 1/2, CMC [0, 1].
    distances = np.array([[0.1, 0.2], [0.1, 0.2]])
    result = evaluate(distances, [1, 2], [1, 2], [3, 6], [2, 1], "sysu", max_rank=2)
    assert result["num_valid_queries"] == 1
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mINP"] == pytest.approx(0.5)
    np.testing.assert_array_equal(result["cmc"], [0, 1])
    with pytest.raises(ValueError, match="no query"):
        evaluate(distances[:1], [1], [1, 2], [3], [2, 1], "sysu")


def test_ties_keep_gallery_order():
    # Equal distances: the stable sort keeps gallery order, ids 2, 1, 2 -> match at 1: AP = 1/2.
    result = one_query([0.5, 0.5, 0.5], [2, 1, 2], [1, 1, 1], 1, 6, "regdb", max_rank=3)
    assert result["mAP"] == pytest.approx(0.5)
    np.testing.assert_array_equal(result["cmc"], [0, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_argsort_equals_numpy_stable_sort(dtype):
    rng = np.random.default_rng(1)
    values = (np.round(rng.random((50, 30)) * 10) - 5).astype(dtype)  # many ties
    values[0, :13] = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1.0, -1.0, 0.0, np.nan, -0.0, 1e-45, -1e-45]
    values[1] = rng.standard_normal(30)  # no ties
    np.testing.assert_array_equal(metrics.stable_argsort(values), np.argsort(values, axis=1, kind="stable"))


def test_ranked_prefix_is_the_stable_order_up_to_the_limit():
    rng = np.random.default_rng(2)
    distances = np.round(rng.random((20, 200)) * 50)  # many ties
    limits = rng.integers(0, 5, 20).astype(np.float64)
    order = metrics.ranked_prefix(distances, limits)
    stable = np.argsort(distances, axis=1, kind="stable")
    assert order.shape[1] < 100
    for row in range(20):
        length = np.count_nonzero(distances[row] <= limits[row])
        np.testing.assert_array_equal(order[row, :length], stable[row, :length])
    limits[3] = np.nan  # asks for whole rows
    np.testing.assert_array_equal(metrics.ranked_prefix(distances, limits), stable)


def test_cmc_beyond_gallery_length_stays_at_final_value():
    result = one_query([0.2, 0.1], [2, 1], [1, 1], 1, 1, "regdb", max_rank=4)
    np.testing.assert_array_equal(result["cmc"], [1, 1, 1, 1])


def test_rejects_bad_arguments():
    distances = np.zeros((1, 2))
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(distances, [1], [1, 2], [1], [1, 2], "market")
    with pytest.raises(ValueError, match="does not fit"):
        evaluate(distances, [1], [1, 2, 3], [1], [1, 2, 3], "regdb")
    with pytest.raises(ValueError, match="cover"):
        metrics.evaluate_chunks([distances], [1, 1], [1, 2], [1, 1], [1, 2], "regdb")
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_features(np.ones((1, 2)), np.ones((2, 2)), [1], [1, 2], [1], [1, 2], "regdb", chunk_size=0)


def test_score_queries_takes_the_exclusion_mask_and_cmc_variant_as_arrays():
    # Ranked ids 2, 2, 3, 1 for a query of id 1; the mask drops the second entry.
    # Kept: 2, 3, 1 -> match at position 2 (plain), distinct ids 2, 3, 1 -> position 2 (collapsed).
    # All kept: 2, 2, 3, 1 -> position 3 (plain), collapsed still 2.
    distances, q_pids, g_pids = np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([1]), np.array([2, 2, 3, 1])
    masked = np.array([[True, False, True, True]])
    everything = np.ones((1, 4), bool)
    assert metrics.score_queries(distances, q_pids, g_pids, masked, False).first_rank[0] == 2
    assert metrics.score_queries(distances, q_pids, g_pids, everything, False).first_rank[0] == 3
    assert metrics.score_queries(distances, q_pids, g_pids, everything, True).first_rank[0] == 2
    scores = metrics.score_queries(distances, q_pids, g_pids, masked, True)
    assert scores.average_precision[0] == pytest.approx(1 / 3)
    assert scores.inverse_negative_penalty[0] == pytest.approx(1 / 3)
