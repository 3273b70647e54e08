"""The evaluation runner: feature extraction, and every protocol run end to end with a known answer.

The known answers come from a stand-in model whose embedding is written in the image pixels: a
point on the unit circle at an angle the test chooses per identity folder of a small tree in the
dataset's distributed layout, so that every ranking, and every metric, can be worked out by hand
from the angles alone. Queries and galleries swapped, a camera mapped wrongly or an exclusion
skipped, and an image through the other modality's stem, all give other numbers (or an error).
"""

import gc
import pathlib
import weakref

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lba_tf.data.datasets.llcm import LLCM
from lba_tf.data.datasets.regdb import RegDB
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from lba_tf.evaluation import runner
from lba_tf.models.lba import LbAModel
from tests.data.layouts import (
    IMAGE_SIZE,
    SYSU_CAMERAS,
    llcm_name,
    regdb_split,
    sysu_images,
    write_llcm,
    write_regdb,
    write_sysu,
)

DEGREES_PER_LEVEL = 10
"""The stand-in's angle is ``DEGREES_PER_LEVEL x (red // 16)``, so angles are multiples of 10 in [0, 150]."""
INFRARED_FOLDERS = ("cam3", "cam6", "Thermal", "test_nir", "nir")
"""First path components of the infrared images in the SYSU-MM01, RegDB and LLCM layouts."""


def _model():
    return LbAModel(num_classes=4, depth=18, width=8, method="baseline").build_for(32, 16)


def test_a_second_evaluation_reuses_the_traced_function():
    model = _model()
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 16, 3), np.uint8)
    modality = [0, 1, 0, 1, 0, 1]
    first = runner.extract_features(model, images, modality, batch_size=4)
    traces = runner._embed_function(model).experimental_get_tracing_count()
    second = runner.extract_features(model, images, modality, batch_size=4)
    assert runner._embed_function(model).experimental_get_tracing_count() == traces
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_the_cached_function_does_not_keep_the_model_alive():
    model = _model()
    runner.extract_features(model, np.zeros((2, 32, 16, 3), np.uint8), [0, 1], batch_size=2)
    assert model in runner._EMBED_FUNCTIONS
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


class PixelAngleModel:
    """Stand-in for ``LbAModel.embed``: reads the embedding an image's pixels encode.

    A painted image (``paint``) is uniform: red ``16 k + 8`` encodes the angle ``10 k`` degrees;
    a visible image has blue = red + 128 (mod 256), an infrared one is gray. The embedding is the
    unit vector ``(cos, sin)`` of the angle, ``[N, 2]``; an image given the other modality's code
    (0 visible, 1 infrared) fails an assertion, as a stem mix-up would fail a real model.
    """

    def embed(self, images, modality, training=False):
        pixels = tf.reduce_mean(images * IMAGENET_STD + IMAGENET_MEAN, axis=[1, 2]) * 255.0  # undoes normalize
        visible = tf.abs(pixels[:, 2] - pixels[:, 0]) > 64.0
        tf.debugging.assert_equal(
            tf.cast(visible, tf.int32), 1 - modality, message="an image was embedded with the other modality's code"
        )
        angle = tf.floor(pixels[:, 0] / 16.0) * (DEGREES_PER_LEVEL * np.pi / 180.0)
        return tf.stack([tf.cos(angle), tf.sin(angle)], axis=1)


def paint(root: pathlib.Path, degrees: dict[str, int], default: int = 0) -> None:
    """Rewrite every image of a dataset tree to encode an angle for :class:`PixelAngleModel`.

    Args:
        root: the dataset folder.
        degrees: ``{identity folder relative to root ("cam3/0001", "Thermal/4"): angle}``, a
            multiple of 10 in [0, 150].
        default: the angle of the images of the other folders (the training images).
    """
    painted = set()
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".jpg", ".bmp"):
            continue
        folder = path.parent.relative_to(root).as_posix()
        level = 16 * (degrees.get(folder, default) // DEGREES_PER_LEVEL) + 8
        if path.relative_to(root).parts[0] in INFRARED_FOLDERS:
            pixels = np.full(IMAGE_SIZE, level, np.uint8)
        else:
            pixels = np.stack(np.broadcast_arrays(level, level, (level + 128) % 256), -1) * np.ones((*IMAGE_SIZE, 1))
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        painted.add(folder)
    assert set(degrees) <= painted, f"no images in {sorted(set(degrees) - painted)}"


def evaluate(dataset, trials):
    """``evaluate_model`` of the stand-in on ``dataset``, at the painted images' size."""
    height, width = IMAGE_SIZE
    return runner.evaluate_model(PixelAngleModel(), dataset, height=height, width=width, trials=trials, batch_size=5)


def assert_every_trial(result, rank1, mAP, mINP):
    for trial in result.trials:
        row = trial.row()
        assert (row["rank1"], row["mAP"], row["mINP"]) == pytest.approx((rank1, mAP, mINP), abs=1e-9)


# SYSU-MM01. Test ids 1 (at 20 degrees) and 2 (at 100 degrees) in all six cameras, two images a
# folder; id 1's cam3 images, queries, at 50 degrees; one folder of id 2, the decoy, at 50 degrees
# too: the nearest gallery image of those cam3 queries, unless the protocol ignores it. Every
# other ranking puts the query's own identity first. Where the decoy is seen by the cam3 queries
# of id 1, they rank it (id 2), then id 1's gallery images (30 degrees away), then id 2's others
# (50 degrees away): rank-1 missed, the true matches at positions 1..n, AP = mean of k / (k + 1),
# INP = n / (n + 1); the other three quarters of the queries score 1.
SYSU_DECOY_CASES = {
    # cam2 is ignored by cam3 queries (same room)
    ("all", 2): (100.0, 100.0, 100.0),
    # 3 true matches (cameras 1, 4, 5; cam2 ignored): AP = (1/2 + 2/3 + 3/4) / 3 = 23/36, INP = 3/4
    ("all", 1): (75.0, 100 * (3 + 23 / 36) / 4, 100 * (3 + 3 / 4) / 4),
    ("all", 4): (75.0, 100 * (3 + 23 / 36) / 4, 100 * (3 + 3 / 4) / 4),
    # indoor-search galleries are cameras 1 and 2 only
    ("indoor", 4): (100.0, 100.0, 100.0),
    ("indoor", 2): (100.0, 100.0, 100.0),
    # 1 true match (camera 1): AP = INP = 1/2
    ("indoor", 1): (75.0, 100 * (3 + 1 / 2) / 4, 100 * (3 + 1 / 2) / 4),
}


def sysu_tree(root, decoy_camera):
    images = sysu_images([1, 2], SYSU_CAMERAS, count=2)
    images.update(sysu_images([5, 6], (1, 3), count=1))
    root = write_sysu(root, train_ids=[5], val_ids=[6], test_ids=[1, 2], images=images)
    degrees = {f"cam{camera}/{pid:04d}": {1: 20, 2: 100}[pid] for camera in SYSU_CAMERAS for pid in (1, 2)}
    degrees["cam3/0001"] = 50
    degrees[f"cam{decoy_camera}/0002"] = 50
    paint(root, degrees)
    return root


@pytest.mark.parametrize("search_mode,decoy_camera", list(SYSU_DECOY_CASES))
def test_sysu_infrared_queries_rank_the_search_modes_cameras_ignoring_cam2_for_cam3(
    tmp_path, search_mode, decoy_camera
):
    dataset = SYSUMM01(str(sysu_tree(tmp_path / "SYSU-MM01", decoy_camera)), search_mode=search_mode)
    results = evaluate(dataset, trials=2)
    assert list(results) == ["infrared_to_visible"]
    result = results["infrared_to_visible"]
    assert_every_trial(result, *SYSU_DECOY_CASES[search_mode, decoy_camera])
    # 2 ids x cam3, cam6 x 2 images; 2 ids x one image per gallery camera (4 all-search, 2 indoor)
    assert result.scored == f"queries: 8 infrared; gallery: {8 if search_mode == 'all' else 4} visible"


# RegDB. Test ids A, B, two images each per modality: visible A at 0 degrees, thermal A at 60,
# visible B at 90, thermal B at 100. Each visible image's nearest thermal images are its own
# identity's, but thermal A is nearer visible B (30 degrees) than visible A (60). So visible ->
# infrared scores 1 everywhere; infrared -> visible: thermal B queries score 1, thermal A queries
# find their matches at positions 2 and 3 of the plain ranked list (rank-3 hit), AP = (1/3 + 2/4)
# / 2 = 5/12, INP = 2/4.
def regdb_tree(root):
    root = write_regdb(root, ids=[1, 2, 3, 4], images_per_id=2, trials=[1])
    a, b = regdb_split([1, 2, 3, 4], 1)[1]
    paint(root, {f"Visible/{a}": 0, f"Thermal/{a}": 60, f"Visible/{b}": 90, f"Thermal/{b}": 100})
    return root


def test_regdb_each_direction_queries_with_its_named_modality(tmp_path):
    results = evaluate(RegDB(str(regdb_tree(tmp_path / "RegDB")), trial=1), trials=1)
    assert list(results) == ["visible_to_infrared", "infrared_to_visible"]
    forward, backward = results["visible_to_infrared"], results["infrared_to_visible"]
    assert forward.scored == "queries: 4 visible; gallery: 4 infrared"
    assert backward.scored == "queries: 4 infrared; gallery: 4 visible"
    assert_every_trial(forward, 100.0, 100.0, 100.0)
    assert_every_trial(backward, 50.0, 100 * (1 + 5 / 12) / 2, 75.0)
    # the plain cumulative match: rank-2 still misses (collapsed to identities it would hit)
    np.testing.assert_allclose(backward.trials[0].cmc[:4], [0.5, 0.5, 1.0, 1.0])


# LLCM. Test ids A = 1, B = 2, two images a folder. Visible: A cam1 at 80 degrees, A cam2 at 50,
# B cam1 at 0, B cam2 at 40; infrared: A cam2 at 50, B cam4 at 0. The infrared A cam2 images see
# their twin (visible A cam2, 0 degrees away) excluded as same identity and camera, then rank
# visible B cam2 (10 away) before visible A cam1 (30 away): rank-1 missed; the infrared B images
# score 1. Infrared -> visible: every infrared image ranks one drawn visible image per folder, so
# the A query's match is at position 1: AP = INP = 1/2. Visible -> infrared: one drawn infrared
# image per folder ranks every visible image, so its matches are at positions 2 and 3: AP =
# (1/3 + 2/4) / 2 = 5/12, INP = 2/4.
LLCM_DEGREES = {
    "test_vis/cam1/0001": 80,
    "test_vis/cam2/0001": 50,
    "test_vis/cam1/0002": 0,
    "test_vis/cam2/0002": 40,
    "test_nir/cam2/0001": 50,
    "test_nir/cam4/0002": 0,
}


def llcm_tree(root):
    test = {}
    for folder in LLCM_DEGREES:
        kind, camera, pid = folder.split("/")
        modality, camera, pid = kind[len("test_") :], int(camera[len("cam") :]), int(pid)
        test[modality, camera, pid] = [llcm_name(pid, camera, k, modality) for k in (1, 2)]
    train = {(modality, camera, pid): 1 for pid in (7, 8) for modality, camera in (("vis", 1), ("nir", 2))}
    root = write_llcm(root, train, test_ids=[1, 2], test=test)
    paint(root, LLCM_DEGREES)
    return root


def test_llcm_directions_rank_as_the_authors_script_with_same_identity_and_camera_excluded(tmp_path):
    results = evaluate(LLCM(str(llcm_tree(tmp_path / "LLCM"))), trials=2)
    assert list(results) == ["visible_to_infrared", "infrared_to_visible"]
    forward, backward = results["visible_to_infrared"], results["infrared_to_visible"]
    assert backward.scored == "queries: 4 infrared; gallery: 4 visible"
    assert forward.scored == "queries: 2 infrared; gallery: 8 visible"
    assert_every_trial(backward, 50.0, 100 * (1 + 1 / 2) / 2, 100 * (1 + 1 / 2) / 2)
    assert_every_trial(forward, 50.0, 100 * (1 + 5 / 12) / 2, 100 * (1 + 1 / 2) / 2)


def test_ranked_lists_of_the_first_trial_rank_as_scored_on_copies_of_the_images(tmp_path, monkeypatch):
    # the decoy in cam1: id 1's cam3 queries rank it first (same angle), then id 1's cam1, cam4 and
    # cam5 images (30 degrees away; cam2 ignored), then id 2's cam4 and cam5 (50 degrees away)
    dataset = SYSUMM01(str(sysu_tree(tmp_path / "SYSU-MM01", decoy_camera=1)))
    decoded = []
    load_images = runner.load_images
    monkeypatch.setattr(runner, "load_images", lambda *a, **k: decoded.append(load_images(*a, **k)) or decoded[-1])
    results = evaluate(dataset, trials=2)
    ranked = results.ranked_lists["infrared_to_visible"]
    assert ranked.score_name == "cosine similarity" and len(ranked.rows) == 6
    first = ranked.rows[0]
    assert (first.query_pid, first.note) == (1, "infrared cam3")
    assert first.gallery_pids == [2, 1, 1, 1, 2, 2] and first.first_right == 2
    np.testing.assert_allclose(first.scores, np.cos(np.radians([0, 30, 30, 30, 50, 50])), atol=1e-6)
    assert [row.query_pid for row in ranked.rows] == [1, 1, 1, 2, 2, 2]
    (cache,) = decoded
    row = [r.path for r in cache.records].index("cam3/0001/0001.jpg")
    np.testing.assert_array_equal(first.query, cache.images[row])
    drawn = [first.query, *first.gallery]
    assert not any(np.shares_memory(image, cache.images) for image in drawn)  # the cache can go


def test_re_ranked_lists_show_distances(tmp_path):
    dataset = SYSUMM01(str(sysu_tree(tmp_path / "SYSU-MM01", decoy_camera=1)))
    height, width = IMAGE_SIZE
    results = runner.evaluate_model(
        PixelAngleModel(), dataset, height=height, width=width, trials=1, batch_size=5, rerank=True
    )
    ranked = results.ranked_lists["infrared_to_visible"]
    assert ranked.score_name == "re-ranked distance"
    scores = ranked.rows[0].scores
    assert scores == sorted(scores)  # ascending: distances, smaller first
    assert dict(results) == results.results and list(results) == ["infrared_to_visible"]
