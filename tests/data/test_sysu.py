"""SYSU-MM01 reader: training set, query list and the literature's random galleries, on small trees."""

import os
import random
import shutil

import pytest

from lba_tf.data.datasets.common import DatasetError
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.data.records import ImageRecord
from tests.data.layouts import literal_gallery, small_sysu, sysu_images, write_sysu

ALL = ["cam1", "cam2", "cam4", "cam5"]
INDOOR = ["cam1", "cam2"]


@pytest.fixture
def root(tmp_path):
    return str(small_sysu(tmp_path / "SYSU-MM01"))


def _paths(root, records):
    return [root + "/" + r.path for r in records]


def test_training_set_counts_labels_cameras_and_order(root):
    dataset = SYSUMM01(root)
    # Train + val ids 5, 1, 7 and 2; 2 images per camera; id 2 has no cam5 folder.
    expected = []
    for cameras, modality in (((1, 2, 4, 5), "visible"), ((3, 6), "infrared")):
        for pid in (1, 2, 5, 7):
            for camera in cameras:
                if (camera, pid) != (5, 2):
                    expected += [ImageRecord(f"cam{camera}/{pid:04d}/{k:04d}.jpg", pid, camera, modality,
                                             {1: 0, 2: 1, 5: 2, 7: 3}[pid]) for k in (1, 2)]
    assert dataset.train == expected
    assert len(dataset.train) == 4 * 4 * 2 - 2 + 4 * 2 * 2
    assert dataset.num_classes == 4
    assert dataset.protocol == "sysu" and dataset.directions == ("infrared_to_visible",)


def test_labels_follow_sorted_infrared_pids_not_id_file_order(tmp_path):
    images = sysu_images([30, 4, 17, 8], (1, 3), 1)
    dataset = SYSUMM01(str(write_sysu(tmp_path, [30, 4], [17], [8], images)))
    assert {r.pid: r.label for r in dataset.train} == {4: 0, 17: 1, 30: 2}


def test_query_is_every_ir_image_of_test_ids_by_id_camera_file(root):
    (split,) = SYSUMM01(root).test_splits("infrared_to_visible", 1)
    # Test ids 15, 9, 12 -> sorted 9, 12, 15; cameras 3 then 6; id 12 has no cam6 folder.
    expected = [ImageRecord(f"cam{camera}/{pid:04d}/{k:04d}.jpg", pid, camera, "infrared")
                for pid, cameras in ((9, (3, 6)), (12, (3,)), (15, (3, 6))) for camera in cameras
                for k in (1, 2, 3)]
    assert list(split.query) == expected


def test_query_file_order_is_sorted_by_name(tmp_path):
    names = ["0010.jpg", "0002.jpg", "0001.jpg"]
    images = {**sysu_images([1, 2], (1, 3), 1), (3, 3): names, (1, 3): names}
    root = write_sysu(tmp_path, [1], [2], [3], images)
    (split,) = SYSUMM01(str(root)).test_splits("infrared_to_visible", 1)
    assert [r.path for r in split.query] == ["cam3/0003/0001.jpg", "cam3/0003/0002.jpg", "cam3/0003/0010.jpg"]


@pytest.mark.parametrize("mode,cameras,size", [("all", ALL, 4 + 3 + 4), ("indoor", INDOOR, 2 + 1 + 2)])
def test_single_shot_gallery_equals_the_literal_global_random_procedure(root, mode, cameras, size):
    splits = SYSUMM01(root, search_mode=mode).test_splits("infrared_to_visible", 10)
    assert [s.trial for s in splits] == list(range(10))
    for t, split in enumerate(splits):
        assert _paths(root, split.gallery) == literal_gallery(root, [15, 9, 12], cameras, t)
        assert len(split.gallery) == size  # one per (id, camera) folder; id 12 lacks cam1
        assert all(r.modality == "visible" and r.label == -1 and r.path.startswith(f"cam{r.camera}/")
                   for r in split.gallery)
    assert len({tuple(s.gallery) for s in splits}) > 1  # the trials draw different galleries


@pytest.mark.parametrize("mode,cameras", [("all", ALL), ("indoor", INDOOR)])
def test_multi_shot_gallery_equals_the_literal_procedure_and_caps_at_ten(tmp_path, mode, cameras):
    images = {**sysu_images([1, 2], (1, 3), 1), **sysu_images([5, 6], (1, 2, 3, 4, 5), 12)}
    images[2, 6] = ["0001.jpg", "0002.jpg", "0003.jpg"]
    root = str(write_sysu(tmp_path, [1], [2], [6, 5], images))
    splits = SYSUMM01(root, search_mode=mode, gallery_shots="multi").test_splits("infrared_to_visible", 10)
    for t, split in enumerate(splits):
        assert _paths(root, split.gallery) == literal_gallery(root, [6, 5], cameras, t, shots="multi")
    per_folder = [10, 10, 10, 10, 10, 3, 10, 10] if mode == "all" else [10, 10, 10, 3]
    assert len(splits[0].gallery) == sum(per_folder)


def test_gallery_leaves_the_global_random_state_alone(root):
    dataset = SYSUMM01(root)
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    dataset.test_splits("infrared_to_visible", 3)
    assert [random.random() for _ in range(3)] == expected


def test_only_infrared_to_visible_is_evaluated(root):
    with pytest.raises(ValueError, match="infrared_to_visible"):
        SYSUMM01(root).test_splits("visible_to_infrared", 1)
    with pytest.raises(ValueError, match="trials"):
        SYSUMM01(root).test_splits("infrared_to_visible", 0)


def test_missing_root_camera_or_id_file_names_the_path(root, tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}/nowhere: folder not found"):
        SYSUMM01(str(tmp_path / "nowhere"))
    os.remove(os.path.join(root, "exp", "val_id.txt"))
    with pytest.raises(DatasetError, match=f"{root}/exp/val_id.txt: file not found"):
        SYSUMM01(root)


def test_missing_camera_folder_names_the_path(root):
    shutil.rmtree(os.path.join(root, "cam4"))
    with pytest.raises(DatasetError, match=f"{root}/cam4: folder not found"):
        SYSUMM01(root)


@pytest.mark.parametrize("content,message", [
    ("1,2,x\n", r"test_id.txt:1: 'x' is not an identity number"),
    ("9,12\n15\n", r"test_id.txt:2: expected a single line"),
    ("9,12,9\n", r"test_id.txt:1: identities listed twice: \[9\]"),
    ("\n", r"test_id.txt: no identities"),
])
def test_unparsable_id_file_names_file_and_line(root, content, message):
    with open(os.path.join(root, "exp", "test_id.txt"), "w") as f:
        f.write(content)
    with pytest.raises(DatasetError, match=f"{root}/exp/{message}"):
        SYSUMM01(root)


def test_training_identity_in_one_modality_only_is_an_error(root):
    shutil.rmtree(os.path.join(root, "cam3", "0007"))
    shutil.rmtree(os.path.join(root, "cam6", "0007"))
    with pytest.raises(DatasetError, match=rf"{root}: .*no infrared images for identities \[7\]"):
        SYSUMM01(root)


def test_identity_in_training_and_test_is_an_error(root):
    with open(os.path.join(root, "exp", "val_id.txt"), "w") as f:
        f.write("2,9\n")
    with pytest.raises(DatasetError, match=r"identities \[9\] are listed for both training and test"):
        SYSUMM01(root)


def test_empty_identity_folder_is_an_error(root):
    os.makedirs(os.path.join(root, "cam5", "0009"), exist_ok=True)
    for name in os.listdir(os.path.join(root, "cam5", "0009")):
        os.remove(os.path.join(root, "cam5", "0009", name))
    with pytest.raises(DatasetError, match=f"{root}/cam5/0009: empty identity folder"):
        SYSUMM01(root)
