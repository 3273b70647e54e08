"""Protocols: each one's directions and roles, galleries drawn as the literature draws them, exclusions,
CMC variant; on small trees in each dataset's layout."""

import random

import numpy as np
import pytest

from lba_tf.data.datasets.llcm import LLCM
from lba_tf.data.datasets.regdb import RegDB
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.data.records import ImageRecord
from lba_tf.evaluation import evaluate
from lba_tf.evaluation.protocols import (
    PROTOCOLS,
    LLCMProtocol,
    RegDBProtocol,
    Roles,
    SYSUMM01Protocol,
    draw_gallery,
    get_protocol,
    split_labels,
)
from tests.data.layouts import (
    literal_gallery,
    llcm_name,
    regdb_split,
    small_llcm,
    small_sysu,
    sysu_images,
    write_regdb,
    write_sysu,
)

SYSU_ALL = ["cam1", "cam2", "cam4", "cam5"]
SYSU_INDOOR = ["cam1", "cam2"]
LLCM_VIS = [f"test_vis/cam{c}" for c in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
LLCM_NIR = [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)]
LLCM_TEST_IDS = [40, 20, 30]
REGDB_IDS = [3, 5, 8, 13, 21, 34]


def splits(dataset, direction, trials):
    return dataset.protocol.test_splits(dataset.test_images, direction, trials)


def _paths(root, records):
    return [root + "/" + r.path for r in records]


# --- the protocol objects -------------------------------------------------------------------


def test_directions_and_roles_name_what_each_direction_scores():
    assert SYSUMM01Protocol().roles == {
        "infrared_to_visible": Roles(query="infrared", gallery="visible", drawn="visible")
    }
    assert RegDBProtocol().roles == {
        "visible_to_infrared": Roles("visible", "infrared"),
        "infrared_to_visible": Roles("infrared", "visible"),
    }
    # LLCM: infrared queries in both directions; visible_to_infrared draws the queries.
    assert LLCMProtocol().roles == {
        "visible_to_infrared": Roles("infrared", "visible", drawn="infrared"),
        "infrared_to_visible": Roles("infrared", "visible", drawn="visible"),
    }
    assert LLCMProtocol().directions == ("visible_to_infrared", "infrared_to_visible")


def test_cmc_variant_of_each_protocol():
    assert SYSUMM01Protocol.collapse_identities and LLCMProtocol.collapse_identities
    assert not RegDBProtocol.collapse_identities


def test_exclusion_rule_of_each_protocol():
    # Queries (id, camera): (1, 3) (1, 6) (2, 2). Gallery: (1, 2) (1, 1) (2, 2) (3, 2).
    q_pids, q_cams = np.array([1, 1, 2]), np.array([3, 6, 2])
    g_pids, g_cams = np.array([1, 1, 2, 3]), np.array([2, 1, 2, 2])
    # SYSU-MM01: the camera-3 query ignores every camera-2 image, whatever its identity.
    np.testing.assert_array_equal(
        SYSUMM01Protocol().keep_mask(q_pids, q_cams, g_pids, g_cams), [[0, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    )
    # LLCM: a query ignores its own identity in its own camera only.
    np.testing.assert_array_equal(
        LLCMProtocol().keep_mask(q_pids, q_cams, g_pids, g_cams), [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]]
    )
    # RegDB: nothing.
    assert RegDBProtocol().keep_mask(q_pids, q_cams, g_pids, g_cams).all()


def test_protocols_by_name_and_objects_score_alike():
    assert tuple(PROTOCOLS) == ("sysu", "regdb", "llcm")
    protocol = SYSUMM01Protocol("indoor", "multi")
    assert get_protocol(protocol) is protocol and get_protocol("llcm") == LLCMProtocol()
    distances = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]])
    ids = ([1, 2], [1, 2, 1], [3, 6], [2, 1, 4])
    assert evaluate(distances, *ids, protocol)["mAP"] == evaluate(distances, *ids, "sysu")["mAP"]
    with pytest.raises(ValueError, match=r"unknown protocol 'market'; expected one of \('sysu', "):
        get_protocol("market")


def test_options_are_checked():
    with pytest.raises(ValueError, match="search_mode must be 'all' or 'indoor', got 'outdoor'"):
        SYSUMM01Protocol("outdoor")
    with pytest.raises(ValueError, match="gallery_shots must be 'single' or 'multi', got 'few'"):
        LLCMProtocol("few")
    with pytest.raises(ValueError, match="gallery_shots"):
        draw_gallery([], 0, "few")
    assert SYSUMM01Protocol.VISIBLE_CAMERAS == {"all": (1, 2, 4, 5), "indoor": (1, 2)}


def test_split_labels_are_the_arrays_evaluate_takes():
    query = [ImageRecord("a", 4, 3, "infrared"), ImageRecord("b", 5, 6, "infrared")]
    gallery = [ImageRecord("c", 4, 1, "visible")]
    (split,) = RegDBProtocol().test_splits({"infrared": query, "visible": gallery}, "infrared_to_visible")
    labels = split_labels(split)
    for got, want in zip(labels, ([4, 5], [4], [1, 1], [2])):  # RegDB's role cameras 1 and 2
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64


# --- SYSU-MM01 ------------------------------------------------------------------------------


@pytest.fixture
def sysu_root(tmp_path):
    return str(small_sysu(tmp_path / "SYSU-MM01"))


def test_sysu_query_is_every_ir_image_of_test_ids_by_id_camera_file(sysu_root):
    (split,) = splits(SYSUMM01(sysu_root), "infrared_to_visible", 1)
    # Test ids 15, 9, 12 -> sorted 9, 12, 15; cameras 3 then 6; id 12 has no cam6 folder.
    expected = [
        ImageRecord(f"cam{camera}/{pid:04d}/{k:04d}.jpg", pid, camera, "infrared")
        for pid, cameras in ((9, (3, 6)), (12, (3,)), (15, (3, 6)))
        for camera in cameras
        for k in (1, 2, 3)
    ]
    assert list(split.query) == expected


def test_sysu_query_file_order_is_sorted_by_name(tmp_path):
    names = ["0010.jpg", "0002.jpg", "0001.jpg"]
    images = {**sysu_images([1, 2], (1, 3), 1), (3, 3): names, (1, 3): names}
    root = write_sysu(tmp_path, [1], [2], [3], images)
    (split,) = splits(SYSUMM01(str(root)), "infrared_to_visible", 1)
    assert [r.path for r in split.query] == ["cam3/0003/0001.jpg", "cam3/0003/0002.jpg", "cam3/0003/0010.jpg"]


@pytest.mark.parametrize("mode,cameras,size", [("all", SYSU_ALL, 4 + 3 + 4), ("indoor", SYSU_INDOOR, 2 + 1 + 2)])
def test_sysu_single_shot_gallery_equals_the_literal_global_random_procedure(sysu_root, mode, cameras, size):
    trials = splits(SYSUMM01(sysu_root, search_mode=mode), "infrared_to_visible", 10)
    assert [s.trial for s in trials] == list(range(10))
    for t, split in enumerate(trials):
        assert _paths(sysu_root, split.gallery) == literal_gallery(sysu_root, [15, 9, 12], cameras, t)
        assert len(split.gallery) == size  # one per (id, camera) folder; id 12 lacks cam1
        assert all(
            r.modality == "visible" and r.label == -1 and r.path.startswith(f"cam{r.camera}/") for r in split.gallery
        )
    assert len({tuple(s.gallery) for s in trials}) > 1  # the trials draw different galleries


@pytest.mark.parametrize("mode,cameras", [("all", SYSU_ALL), ("indoor", SYSU_INDOOR)])
def test_sysu_multi_shot_gallery_equals_the_literal_procedure_and_caps_at_ten(tmp_path, mode, cameras):
    images = {**sysu_images([1, 2], (1, 3), 1), **sysu_images([5, 6], (1, 2, 3, 4, 5), 12)}
    images[2, 6] = ["0001.jpg", "0002.jpg", "0003.jpg"]
    root = str(write_sysu(tmp_path, [1], [2], [6, 5], images))
    trials = splits(SYSUMM01(root, search_mode=mode, gallery_shots="multi"), "infrared_to_visible", 10)
    for t, split in enumerate(trials):
        assert _paths(root, split.gallery) == literal_gallery(root, [6, 5], cameras, t, shots="multi")
    per_folder = [10, 10, 10, 10, 10, 3, 10, 10] if mode == "all" else [10, 10, 10, 3]
    assert len(trials[0].gallery) == sum(per_folder)


def test_sysu_gallery_leaves_the_global_random_state_alone(sysu_root):
    dataset = SYSUMM01(sysu_root)
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    splits(dataset, "infrared_to_visible", 3)
    assert [random.random() for _ in range(3)] == expected


def test_sysu_only_infrared_to_visible_is_evaluated(sysu_root):
    with pytest.raises(ValueError, match="SYSU-MM01 is evaluated in infrared_to_visible"):
        splits(SYSUMM01(sysu_root), "visible_to_infrared", 1)
    with pytest.raises(ValueError, match="trials"):
        splits(SYSUMM01(sysu_root), "infrared_to_visible", 0)


# --- RegDB ----------------------------------------------------------------------------------


@pytest.fixture
def regdb_root(tmp_path):
    return str(write_regdb(tmp_path / "RegDB", REGDB_IDS, images_per_id=2, trials=(1, 2)))


def _regdb_path(folder, letter, pid, k):
    return f"{folder}/{pid}/person_{letter}_{k:02d}_{pid}.bmp"


def test_regdb_visible_to_infrared_queries_test_visible_against_test_thermal(regdb_root):
    (split,) = splits(RegDB(regdb_root, trial=2), "visible_to_infrared", 1)
    _, test = regdb_split(REGDB_IDS, 2)
    assert split.direction == "visible_to_infrared" and split.trial == 2
    assert list(split.query) == [
        ImageRecord(_regdb_path("Visible", "v", pid, k), pid, 1, "visible") for pid in test for k in (1, 2)
    ]
    assert list(split.gallery) == [
        ImageRecord(_regdb_path("Thermal", "t", pid, k), pid, 2, "infrared") for pid in test for k in (1, 2)
    ]


def test_regdb_infrared_to_visible_swaps_the_roles_and_keeps_query_camera_1(regdb_root):
    (split,) = splits(RegDB(regdb_root, trial=2), "infrared_to_visible", 1)
    _, test = regdb_split(REGDB_IDS, 2)
    assert list(split.query) == [
        ImageRecord(_regdb_path("Thermal", "t", pid, k), pid, 1, "infrared") for pid in test for k in (1, 2)
    ]
    assert list(split.gallery) == [
        ImageRecord(_regdb_path("Visible", "v", pid, k), pid, 2, "visible") for pid in test for k in (1, 2)
    ]


def test_regdb_more_trials_still_give_the_one_split_of_this_model(regdb_root):
    assert [s.trial for s in splits(RegDB(regdb_root, trial=1), "visible_to_infrared", 10)] == [1]
    with pytest.raises(ValueError, match="trials"):
        splits(RegDB(regdb_root, trial=1), "visible_to_infrared", 0)


# --- LLCM -----------------------------------------------------------------------------------


@pytest.fixture
def llcm_root(tmp_path):
    return str(small_llcm(tmp_path / "LLCM"))


# The side of each split that holds every test image of one modality: infrared_to_visible's
# queries; visible_to_infrared's gallery (the LLCM authors' script ranks the visible set with
# the drawn infrared images).
EVERY = {"infrared_to_visible": "query", "visible_to_infrared": "gallery"}
DRAWN = {"infrared_to_visible": "gallery", "visible_to_infrared": "query"}


@pytest.mark.parametrize(
    "direction,modality,cameras",
    [
        # Test ids sorted 20, 30, 40; test id 30 lacks vis cam2, id 40 lacks nir cam4.
        ("infrared_to_visible", "nir", {20: (2, 4, 9), 30: (2, 4, 9), 40: (2, 9)}),
        ("visible_to_infrared", "vis", {20: (1, 2, 4), 30: (1, 4), 40: (1, 2, 4)}),
    ],
)
def test_llcm_one_side_is_every_test_image_of_a_modality(llcm_root, direction, modality, cameras):
    (split,) = splits(LLCM(llcm_root), direction, 1)
    kind = {"vis": "visible", "nir": "infrared"}[modality]
    folder = f"test_{modality}/cam{{}}/{{:04d}}"
    expected = [
        ImageRecord(f"{folder.format(c, pid)}/{llcm_name(pid, c, k, modality)}", pid, c, kind)
        for pid in (20, 30, 40)
        for c in cameras[pid]
        for k in (1, 3, 12)
    ]
    assert list(getattr(split, EVERY[direction])) == expected


@pytest.mark.parametrize(
    "direction,cameras,size",
    [
        ("infrared_to_visible", LLCM_VIS, 3 + 2 + 3),
        ("visible_to_infrared", LLCM_NIR, 3 + 3 + 2),
    ],
)
@pytest.mark.parametrize("shots", ["single", "multi"])
def test_llcm_drawn_side_equals_the_literal_global_random_procedure(llcm_root, direction, cameras, size, shots):
    trials = splits(LLCM(llcm_root, gallery_shots=shots), direction, 10)
    assert [s.trial for s in trials] == list(range(10))
    for t, split in enumerate(trials):
        drawn = getattr(split, DRAWN[direction])
        reference = literal_gallery(llcm_root, LLCM_TEST_IDS, cameras, t, shots)
        assert [llcm_root + "/" + r.path for r in drawn] == reference
        assert len(drawn) == size * (1 if shots == "single" else 3)
        folder = {"visible": "test_vis", "infrared": "test_nir"}
        assert all(r.path.startswith(f"{folder[r.modality]}/cam{r.camera}/{r.pid:04d}/") for r in drawn)
    assert len({tuple(getattr(s, DRAWN[direction])) for s in trials}) > 1


def test_llcm_gallery_leaves_the_global_random_state_alone(llcm_root):
    dataset = LLCM(llcm_root)
    random.seed(77)
    expected = random.random()
    random.seed(77)
    splits(dataset, "visible_to_infrared", 2)
    assert random.random() == expected
