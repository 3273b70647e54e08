"""LLCM reader: training lists and test identity folders, on small trees (splits: test_protocols)."""

import os
import re
import shutil

import pytest

from lba_tf.data.datasets.common import DatasetError, ListEntry
from lba_tf.data.datasets.llcm import LLCM, parse_train_path
from lba_tf.data.records import ImageRecord
from lba_tf.evaluation.protocols import LLCMProtocol
from tests.data.layouts import llcm_name, small_llcm, write_llcm


@pytest.fixture
def root(tmp_path):
    return str(small_llcm(tmp_path / "LLCM"))


def test_training_set_follows_the_lists_with_their_labels(root):
    dataset = LLCM(root)
    # Ids 3, 8, 11 (labels 0, 1, 2), each with 2 images in vis cameras 1, 5 and nir cameras 2, 7.
    expected = [
        ImageRecord(
            f"{modality}/{pid:04d}/{llcm_name(pid, camera, k, modality)}",
            pid,
            camera,
            {"vis": "visible", "nir": "infrared"}[modality],
            label,
        )
        for modality, cameras in (("vis", (1, 5)), ("nir", (2, 7)))
        for label, pid in enumerate((3, 8, 11))
        for camera in cameras
        for k in (1, 2)
    ]
    assert dataset.train == expected
    assert dataset.num_classes == 3
    assert dataset.protocol == LLCMProtocol("single")
    assert set(dataset.protocol.directions) == {"visible_to_infrared", "infrared_to_visible"}


def test_test_images_are_the_test_identity_folders_of_every_camera(root):
    dataset = LLCM(root, gallery_shots="multi")
    assert dataset.protocol == LLCMProtocol("multi")
    # Test ids sorted 20, 30, 40; id 30 lacks vis cam2, id 40 lacks nir cam4.
    assert [f.path for f in dataset.test_images["visible"]] == [
        f"test_vis/cam{c}/{pid:04d}"
        for pid, cameras in ((20, (1, 2, 4)), (30, (1, 4)), (40, (1, 2, 4)))
        for c in cameras
    ]
    assert [f.path for f in dataset.test_images["infrared"]] == [
        f"test_nir/cam{c}/{pid:04d}"
        for pid, cameras in ((20, (2, 4, 9)), (30, (2, 4, 9)), (40, (2, 9)))
        for c in cameras
    ]
    assert all(f.modality == "infrared" for f in dataset.test_images["infrared"])


@pytest.mark.parametrize(
    "path,expected",
    [
        ("nir/0351/0351_c06_s200656_f4830_nir.jpg", (351, 6)),
        ("test_vis/cam3/0012/0012_c03_s1_f1_vis.jpg", (12, 3)),
        ("train_vis/cam7/0002/any.jpg", (2, 7)),
    ],
)
def test_train_path_gives_pid_and_camera(path, expected):
    assert parse_train_path(ListEntry(path, 0, "list:1")) == expected


@pytest.mark.parametrize(
    "path,message",
    [
        ("vis/0001/no_camera.jpg", "list:4: no camera"),
        ("vis/12/0012_c01_x.jpg", "list:4: 'vis/12/0012_c01_x.jpg' is not in a 4-digit identity folder"),
    ],
)
def test_train_path_without_pid_or_camera_is_an_error(path, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        parse_train_path(ListEntry(path, 0, "list:4"))


def _rewrite(path, edit):
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(edit(lines)) + "\n")


def test_label_given_to_two_identities_is_an_error(root):
    path = os.path.join(root, "idx", "train_nir.txt")
    _rewrite(path, lambda lines: [lines[0].replace(" 0", " 1")] + lines[1:])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:1: label 1 is given to identities 8 and 3")):
        LLCM(root)


def test_identity_with_two_labels_across_modalities_is_an_error(tmp_path):
    train = {("vis", 1, 3): 1, ("vis", 1, 8): 1, ("nir", 2, 3): 1, ("nir", 2, 8): 1}
    root = write_llcm(tmp_path, train, [20], {("vis", 1, 20): ["a.jpg"], ("nir", 2, 20): ["b.jpg"]})
    path = os.path.join(root, "idx", "train_nir.txt")
    _rewrite(path, lambda lines: [lines[0].replace(" 0", " 5")] + lines[1:])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:1: identity 3 has labels 0 and 5")):
        LLCM(str(root))


def test_training_identity_in_one_modality_only_is_an_error(root):
    path = os.path.join(root, "idx", "train_vis.txt")
    _rewrite(path, lambda lines: [line for line in lines if "/0011/" not in line])
    with pytest.raises(
        DatasetError, match=re.escape("train_nir.txt: no visible image for training identity 11; a batch")
    ):
        LLCM(root)


def test_unparsable_line_names_file_and_line(root):
    path = os.path.join(root, "idx", "train_vis.txt")
    _rewrite(path, lambda lines: lines[:4] + ["vis/0003/x.jpg 1 2"] + lines[4:])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:5: expected '<relative path> <label>'")):
        LLCM(root)


def test_missing_files_and_folders_name_the_path(root):
    os.remove(os.path.join(root, "idx", "test_id.txt"))
    with pytest.raises(DatasetError, match=re.escape(f"{root}/idx/test_id.txt: file not found")):
        LLCM(root)
    open(os.path.join(root, "idx", "test_id.txt"), "w").write("20,30,40\n")
    shutil.rmtree(os.path.join(root, "test_nir", "cam5"))
    with pytest.raises(DatasetError, match=re.escape(f"{root}/test_nir/cam5: folder not found")):
        LLCM(root)


def test_identity_in_training_and_test_is_an_error(root):
    open(os.path.join(root, "idx", "test_id.txt"), "w").write("20,30,40,8\n")
    with pytest.raises(DatasetError, match=re.escape("identities [8] are listed for both training and test")):
        LLCM(root)


def test_missing_root_names_it(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path}/LLCM: folder not found")):
        LLCM(str(tmp_path / "LLCM"))
