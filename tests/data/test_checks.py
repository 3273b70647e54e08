"""check_training_data: the training set can fill P identities per batch, from the listing alone."""

import re
import shutil

import pytest

from lba_tf.config import CONFIG_DIR, ConfigError, load_config
from lba_tf.data import synthetic
from lba_tf.data.checks import check_training_data
from lba_tf.data.datasets.common import DatasetError
from lba_tf.data.datasets.registry import build_dataset
from tests.data.layouts import small_llcm, small_sysu, write_regdb

SMALL_SYNTHETIC = [
    "data.synthetic.num_train_ids=5",
    "data.synthetic.num_test_ids=3",
    "data.synthetic.images_per_camera=1",
    "data.synthetic.image_height=32",
    "data.synthetic.image_width=16",
]


def _data(name, *overrides):
    return load_config(CONFIG_DIR / f"{name}.yaml", list(overrides)).data


def _largest_accepted_p(name, *overrides):
    """The largest P the check accepts (it must refuse P + 1)."""
    p = 2
    while True:
        try:
            check_training_data(_data(name, *overrides, f"data.num_identities={p}"))
        except ConfigError:
            return p - 1
        p += 1


@pytest.mark.parametrize(
    "name, make, identities",
    [
        ("sysu", small_sysu, 4),  # train ids 5, 1, 7 and val id 2
        ("regdb", lambda root: write_regdb(root, list(range(1, 9)), images_per_id=1, trials=(1,)), 4),
        ("llcm", small_llcm, 3),
    ],
)
def test_p_up_to_the_training_identities_of_each_layout(tmp_path, name, make, identities):
    root = make(tmp_path / name)
    assert _largest_accepted_p(name, f"data.root={root}") == identities
    with pytest.raises(ConfigError) as error:
        check_training_data(_data(name, f"data.root={root}", f"data.num_identities={identities + 2}"))
    assert str(error.value) == (
        f"data.num_identities={identities + 2} identities per batch, but the training set of {root} has only "
        f"{identities}: set data.num_identities to at most {identities}"
    )


def test_synthetic_set_is_counted_without_generating_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _largest_accepted_p("synthetic", *SMALL_SYNTHETIC) == 5
    with pytest.raises(ConfigError) as error:
        check_training_data(_data("synthetic", *SMALL_SYNTHETIC, "data.num_identities=6"))
    assert str(error.value) == (
        "data.num_identities=6 identities per batch, but the synthetic training set "
        "(data.synthetic.num_train_ids=5) has only 5: set data.num_identities to at most 5 or "
        "data.synthetic.num_train_ids to at least 6"
    )
    assert list(tmp_path.iterdir()) == []
    generated = build_dataset(_data("synthetic", *SMALL_SYNTHETIC), cache_dir=str(tmp_path / "cache"))
    assert generated.num_classes == 5  # what was counted is what the reader finds


def test_no_image_is_decoded(tmp_path):
    root = small_sysu(tmp_path / "sysu")
    for image in root.glob("cam*/*/*.jpg"):
        image.write_bytes(b"not an image")
    check_training_data(_data("sysu", f"data.root={root}", "data.num_identities=4"))


def test_identity_in_one_modality_is_named_with_the_modality_it_lacks(tmp_path):
    root = small_sysu(tmp_path / "sysu")
    shutil.rmtree(root / "cam3" / "0007")
    shutil.rmtree(root / "cam6" / "0007")
    with pytest.raises(DatasetError, match=re.escape(f"{root}: no infrared image for training identity 7; ")):
        check_training_data(_data("sysu", f"data.root={root}", "data.num_identities=2"))


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "synthetic"])
def test_a_missing_root_folder_names_the_key(tmp_path, name):
    with pytest.raises(ConfigError) as error:
        check_training_data(_data(name, f"data.root={tmp_path / 'absent'}"))
    assert str(error.value) == (
        f"data.root: {tmp_path / 'absent'}: folder not found; set it to the {name} dataset folder "
        f"(e.g. --set data.root=/path/to/{name})"
    )
    assert not (tmp_path / "absent").exists()


def test_a_null_root_of_a_real_dataset_names_the_key():
    with pytest.raises(ConfigError, match=re.escape("data.root is null: set it to the regdb dataset folder")):
        check_training_data(_data("regdb", "data.root=null"))


def test_synthetic_counts_match_the_generator_for_other_sizes():
    for num_train_ids in (2, 3, 7, 41):
        config = load_config(None, [f"data.synthetic.num_train_ids={num_train_ids}"]).data.synthetic
        splits = synthetic.split_identities(config)
        assert len(splits["train"]) + len(splits["val"]) == num_train_ids
