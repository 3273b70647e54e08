"""LLCM scored as the LLCM authors' test script (``DEEN/test.py``) scores it, both directions.

The reference below transcribes that script's computation step by step (its file walk, its
``-distmat`` and argument order, and its ``eval_llcm``) in plain numpy, and is compared with what
``lba_tf`` computes from the same features on a small tree in the LLCM layout.
"""

import dataclasses
import os
import random
import zlib

import numpy as np
import pytest

from lba_tf.data.datasets.llcm import LLCM
from lba_tf.evaluation.results import format_table, mean_over_trials
from lba_tf.evaluation.runner import describe_split, evaluate_model, score_split
from lba_tf.models.lba import LbAModel
from tests.data.layouts import llcm_name, small_llcm, write_llcm

VIS_FOLDERS = [f"test_vis/cam{c}" for c in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
NIR_FOLDERS = [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)]
TEST_IDS = list(range(101, 123))  # 22 identities: more than the 20 ranks of the CMC
DIM = 6


def write_tree(root):
    """22 test identities in visible cameras 1, 2, 3 and infrared cameras 1, 2, 4 (cameras 1 and 2
    exist in both, so the same-identity-same-camera exclusion applies across modalities), 2 or 3
    images a folder, some folders missing."""
    rng = random.Random(5)
    test = {}
    for pid in TEST_IDS:
        for modality, cameras in (("vis", (1, 2, 3)), ("nir", (1, 2, 4))):
            for camera in cameras:
                if rng.random() < 0.8 or camera == cameras[0]:
                    test[modality, camera, pid] = [
                        llcm_name(pid, camera, k, modality) for k in range(1, rng.choice((3, 4)))
                    ]
    train = {(m, c, pid): 1 for pid in (1, 2) for m, c in (("vis", 1), ("nir", 2))}
    return str(write_llcm(root, train, TEST_IDS, test))


def feature_of(path):
    """A fixed random unit vector per image, a function of its path relative to the root."""
    v = np.random.default_rng(zlib.crc32(path.encode())).standard_normal(DIM)
    return v / np.linalg.norm(v)


def authors_file_list(root, folders, trial=None):
    """The script's ``process_query_llcm`` (trial None: every file) and ``process_gallery_llcm``
    (``random.seed(trial)``, one ``random.choice`` per identity folder), transcribed: identities
    as sorted 4-digit strings, then the camera folders in order; camera and pid parsed from the
    text after the path's first ``cam`` (parsed here on the path relative to the root, which the
    test's temporary folder name could otherwise break)."""
    if trial is not None:
        random.seed(trial)
    paths = []
    for pid in sorted(f"{i:04d}" for i in TEST_IDS):
        for folder in folders:
            directory = os.path.join(root, folder, pid)
            if os.path.isdir(directory):
                files = sorted(directory + "/" + name for name in os.listdir(directory))
                paths.extend(files if trial is None else [random.choice(files)])
    relative = [p[len(root) + 1 :] for p in paths]
    cams = np.array([int(p.split("cam")[1][0]) for p in relative])
    pids = np.array([int(p.split("cam")[1][2:6]) for p in relative])
    return relative, pids, cams


def authors_eval_llcm(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20):
    """``eval_llcm`` transcribed: per query, drop gallery entries with its pid and camera; CMC over
    the ranked list collapsed to first appearances of each identity; AP and INP over the kept list;
    a query with no true match kept is skipped, and the CMC sum is divided by the valid queries."""
    order = np.argsort(distmat, axis=1)
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        ranked = order[q]
        keep = ~((g_pids[ranked] == q_pids[q]) & (g_cams[ranked] == q_cams[q]))
        ranked_pids = g_pids[ranked][keep]
        first = np.unique(ranked_pids, return_index=True)[1]
        distinct = ranked_pids[np.sort(first)]
        cmcs.append(np.cumsum(distinct == q_pids[q])[:max_rank])
        matches = (ranked_pids == q_pids[q]).astype(np.int64)
        if not matches.any():
            continue
        hits = np.cumsum(matches)
        last = np.flatnonzero(matches).max()
        inps.append(hits[last] / (last + 1.0))
        aps.append((hits / np.arange(1.0, len(hits) + 1) * matches).sum() / matches.sum())
    valid = len(aps)
    return np.sum(np.array(cmcs, np.float64), axis=0) / valid, np.mean(aps), np.mean(inps)


def authors_llcm(root, test_mode, trials):
    """The script's loop: the query set once, a gallery per trial, ``distmat = query @ gallery.T``
    scored as (query, gallery) for ``[1, 2]`` and ``gallery @ query.T`` scored with the gallery
    first for ``[2, 1]``; metrics averaged over the trials."""
    folders = {1: VIS_FOLDERS, 2: NIR_FOLDERS}
    query, q_pids, q_cams = authors_file_list(root, folders[test_mode[1]])
    query_feat = np.stack([feature_of(p) for p in query])
    per_trial = []
    for trial in range(trials):
        gallery, g_pids, g_cams = authors_file_list(root, folders[test_mode[0]], trial)
        gall_feat = np.stack([feature_of(p) for p in gallery])
        if test_mode == [1, 2]:
            per_trial.append(authors_eval_llcm(-(query_feat @ gall_feat.T), q_pids, g_pids, q_cams, g_cams))
        else:
            per_trial.append(authors_eval_llcm(-(gall_feat @ query_feat.T), g_pids, q_pids, g_cams, q_cams))
    return [np.mean([t[i] for t in per_trial], axis=0) for i in range(3)]


def llcm_splits(root, direction, trials):
    dataset = LLCM(root)
    return dataset.protocol.test_splits(dataset.test_images, direction, trials)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("llcm") / "LLCM")


@pytest.mark.parametrize("direction,test_mode", [("infrared_to_visible", [1, 2]), ("visible_to_infrared", [2, 1])])
def test_both_directions_equal_the_authors_computation(root, direction, test_mode):
    splits = llcm_splits(root, direction, 10)
    features = {r.path: feature_of(r.path) for s in splits for r in (*s.query, *s.gallery)}
    ours = mean_over_trials([score_split(s, features, "llcm") for s in splits])
    cmc, mean_ap, mean_inp = authors_llcm(root, test_mode, 10)
    # Same features, same ranking (no ties among random vectors): only the float32 scoring and the
    # order of summation differ, below 1e-6 on values of order 1.
    np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)
    assert ours.mAP == pytest.approx(mean_ap, abs=1e-6)
    assert ours.mINP == pytest.approx(mean_inp, abs=1e-6)
    assert 0.0 < cmc[0] < cmc[-1] <= 1.0


def test_visible_queries_ranking_the_drawn_infrared_images_is_another_number(root):
    # What the name suggests (each visible image ranks the drawn infrared set) is not what the
    # LLCM authors compute; the parity above would fail on it.
    splits = llcm_splits(root, "visible_to_infrared", 10)
    swapped = [dataclasses.replace(s, query=s.gallery, gallery=s.query) for s in splits]
    features = {r.path: feature_of(r.path) for s in splits for r in (*s.query, *s.gallery)}
    named = mean_over_trials([score_split(s, features, "llcm") for s in swapped])
    _, mean_ap, _ = authors_llcm(root, [2, 1], 10)
    assert abs(named.mAP - mean_ap) > 0.01


def test_visible_to_infrared_drawn_infrared_images_rank_every_visible_image(root):
    split = llcm_splits(root, "visible_to_infrared", 3)[2]
    visible, _, _ = authors_file_list(root, VIS_FOLDERS)
    drawn, _, _ = authors_file_list(root, NIR_FOLDERS, trial=2)
    assert [r.path for r in split.query] == drawn
    assert [r.path for r in split.gallery] == visible
    assert describe_split(split) == f"queries: {len(drawn)} infrared; gallery: {len(visible)} visible"


def test_evaluation_table_and_json_say_what_each_direction_scored(tmp_path):
    dataset = LLCM(str(small_llcm(tmp_path / "LLCM")))
    model = LbAModel(num_classes=dataset.num_classes, depth=18, width=8, method="baseline").build_for(32, 16)
    results = evaluate_model(model, dataset, height=32, width=16, trials=2, batch_size=8)
    # small_llcm: 8 infrared folders of 3 images (24), 8 visible folders (24); one drawn per folder.
    assert results["infrared_to_visible"].scored == "queries: 24 infrared; gallery: 8 visible"
    assert results["visible_to_infrared"].scored == "queries: 8 infrared; gallery: 24 visible"
    assert results["visible_to_infrared"].to_json()["scored"] == results["visible_to_infrared"].scored
    table = format_table(results)
    assert "visible_to_infrared: queries: 8 infrared; gallery: 24 visible" in table
