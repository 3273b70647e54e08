"""RegDB reader: one split's training set and test lists, on small trees (splits: test_protocols)."""

import os
import re
import shutil

import pytest

from lba_tf.data.datasets.common import DatasetError
from lba_tf.data.datasets.regdb import RegDB
from lba_tf.data.records import ImageRecord
from lba_tf.evaluation.protocols import RegDBProtocol
from tests.data.layouts import regdb_split, write_regdb

IDS = [3, 5, 8, 13, 21, 34]


@pytest.fixture
def root(tmp_path):
    return str(write_regdb(tmp_path / "RegDB", IDS, images_per_id=2, trials=(1, 2)))


def _path(folder, letter, pid, k):
    return f"{folder}/{pid}/person_{letter}_{k:02d}_{pid}.bmp"


@pytest.mark.parametrize("trial", [1, 2])
def test_training_set_is_the_split_files_visible_then_thermal(root, trial):
    dataset = RegDB(root, trial=trial)
    train, _ = regdb_split(IDS, trial)
    kinds = (("Visible", "v", 1, "visible"), ("Thermal", "t", 2, "infrared"))
    expected = [
        ImageRecord(_path(folder, letter, pid, k), rank, camera, modality, rank)
        for folder, letter, camera, modality in kinds
        for rank, pid in enumerate(train)
        for k in (1, 2)
    ]
    assert dataset.train == expected
    assert dataset.num_classes == 3
    assert dataset.protocol == RegDBProtocol(trial)
    assert dataset.protocol.directions == ("visible_to_infrared", "infrared_to_visible")


def test_test_images_are_the_split_test_lists_in_file_order(root):
    dataset = RegDB(root, trial=2)
    _, test = regdb_split(IDS, 2)
    assert dataset.test_images == {
        "visible": [ImageRecord(_path("Visible", "v", pid, k), pid, 1, "visible") for pid in test for k in (1, 2)],
        "infrared": [ImageRecord(_path("Thermal", "t", pid, k), pid, 2, "infrared") for pid in test for k in (1, 2)],
    }


def test_training_labels_are_renumbered_in_order(root):
    for kind in ("visible", "thermal"):
        path = os.path.join(root, "idx", f"train_{kind}_1.txt")
        lines = open(path).read().split("\n")
        relabelled = (re.sub(r" (\d+)$", lambda m: f" {10 * int(m.group(1)) + 7}", line) for line in lines)
        open(path, "w").write("\n".join(relabelled))
    dataset = RegDB(root, trial=1)
    assert sorted({(r.pid, r.label) for r in dataset.train}) == [(7, 0), (17, 1), (27, 2)]


def test_trial_out_of_range_is_rejected(root):
    with pytest.raises(ValueError, match="1..10"):
        RegDB(root, trial=0)


def test_missing_folder_or_index_file_names_the_path(root):
    with pytest.raises(DatasetError, match=re.escape(f"{root}/idx/train_visible_3.txt: file not found")):
        RegDB(root, trial=3)
    shutil.rmtree(os.path.join(root, "Thermal"))
    with pytest.raises(DatasetError, match=re.escape(f"{root}/Thermal: folder not found")):
        RegDB(root, trial=1)


@pytest.mark.parametrize(
    "line,message",
    [
        ("Visible/3/person_v_01_3.bmp\n", "expected '<relative path> <label>'"),
        ("Visible/3/person_v_01_3.bmp three\n", "expected '<relative path> <label>'"),
        ("Visible/3/missing.bmp 0\n", "Visible/3/missing.bmp not found"),
    ],
)
def test_bad_line_names_file_and_line_number(root, line, message):
    path = os.path.join(root, "idx", "test_visible_1.txt")
    lines = open(path).read().splitlines(keepends=True)
    lines.insert(2, line)
    open(path, "w").write("".join(lines))
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
        RegDB(root, trial=1)


def test_training_identity_in_one_modality_only_is_an_error(root):
    path = os.path.join(root, "idx", "train_thermal_1.txt")
    kept = [line for line in open(path).read().splitlines() if not line.endswith(" 1")]
    open(path, "w").write("\n".join(kept) + "\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            "train_thermal_1.txt: no infrared image for training identity 1; a batch draws K visible and K "
            "infrared images of each of its identities: add the missing images or leave those identities out of "
            "training"
        ),
    ):
        RegDB(root, trial=1)


def test_missing_root_names_it(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path}/RegDB: folder not found")):
        RegDB(str(tmp_path / "RegDB"))
