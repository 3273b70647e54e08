"""SYSU-MM01 reader: training set and test identity folders, on small trees (splits: test_protocols)."""

import os
import re
import shutil

import pytest

from lba_tf.data.datasets.common import DatasetError
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.data.records import ImageRecord
from lba_tf.evaluation.protocols import SYSUMM01Protocol
from tests.data.layouts import small_sysu, sysu_images, write_sysu


@pytest.fixture
def root(tmp_path):
    return str(small_sysu(tmp_path / "SYSU-MM01"))


def test_training_set_counts_labels_cameras_and_order(root):
    dataset = SYSUMM01(root)
    # Train + val ids 5, 1, 7 and 2; 2 images per camera; id 2 has no cam5 folder.
    expected = []
    for cameras, modality in (((1, 2, 4, 5), "visible"), ((3, 6), "infrared")):
        for pid in (1, 2, 5, 7):
            for camera in cameras:
                if (camera, pid) != (5, 2):
                    expected += [
                        ImageRecord(
                            f"cam{camera}/{pid:04d}/{k:04d}.jpg", pid, camera, modality, {1: 0, 2: 1, 5: 2, 7: 3}[pid]
                        )
                        for k in (1, 2)
                    ]
    assert dataset.train == expected
    assert len(dataset.train) == 4 * 4 * 2 - 2 + 4 * 2 * 2
    assert dataset.num_classes == 4
    assert dataset.protocol == SYSUMM01Protocol("all", "single")


def test_test_images_are_the_test_identity_folders_of_the_search_mode(root):
    dataset = SYSUMM01(root, search_mode="indoor", gallery_shots="multi")
    assert dataset.protocol == SYSUMM01Protocol("indoor", "multi")
    # Test ids sorted 9, 12, 15; id 12 has no cam6 and no cam1 folder.
    assert [f.path for f in dataset.test_images["infrared"]] == [
        "cam3/0009",
        "cam6/0009",
        "cam3/0012",
        "cam3/0015",
        "cam6/0015",
    ]
    assert [f.path for f in dataset.test_images["visible"]] == [
        "cam1/0009",
        "cam2/0009",
        "cam2/0012",
        "cam1/0015",
        "cam2/0015",
    ]
    assert dataset.test_images["visible"][0].files == ("0001.jpg", "0002.jpg", "0003.jpg")


def test_labels_follow_sorted_infrared_pids_not_id_file_order(tmp_path):
    images = sysu_images([30, 4, 17, 8], (1, 3), 1)
    dataset = SYSUMM01(str(write_sysu(tmp_path, [30, 4], [17], [8], images)))
    assert {r.pid: r.label for r in dataset.train} == {4: 0, 17: 1, 30: 2}


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


@pytest.mark.parametrize(
    "content,message",
    [
        ("1,2,x\n", r"test_id.txt:1: 'x' is not an identity number"),
        ("9,12\n15\n", r"test_id.txt:2: expected a single line"),
        ("9,12,9\n", r"test_id.txt:1: identities listed twice: \[9\]"),
        ("\n", r"test_id.txt: no identities"),
    ],
)
def test_unparsable_id_file_names_file_and_line(root, content, message):
    with open(os.path.join(root, "exp", "test_id.txt"), "w") as f:
        f.write(content)
    with pytest.raises(DatasetError, match=f"{root}/exp/{message}"):
        SYSUMM01(root)


def test_training_identity_in_one_modality_only_is_an_error(root):
    shutil.rmtree(os.path.join(root, "cam3", "0007"))
    shutil.rmtree(os.path.join(root, "cam6", "0007"))
    with pytest.raises(
        DatasetError, match=re.escape(f"{root}: no infrared image for training identity 7; a batch draws")
    ):
        SYSUMM01(root)


def test_every_identity_lacking_a_modality_is_named_with_the_modality(root):
    for camera in ("cam1", "cam2", "cam4", "cam5"):
        shutil.rmtree(os.path.join(root, camera, "0005"))
    shutil.rmtree(os.path.join(root, "cam3", "0001"))
    shutil.rmtree(os.path.join(root, "cam6", "0001"))
    with open(os.path.join(root, "exp", "val_id.txt"), "w") as f:
        f.write("2,8\n")  # 8 has no folder at all
    with pytest.raises(DatasetError) as error:
        SYSUMM01(root)
    assert str(error.value) == (
        f"{root}: no visible image for training identities 5, 8; no infrared image for training identities 1, 8; "
        "a batch draws K visible and K infrared images of each of its identities: add the missing images or leave "
        "those identities out of training"
    )


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
