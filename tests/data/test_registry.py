"""build_dataset: data.dataset picks the reader with its options; synthetic is generated on first use."""

import os

import pytest

from lba_tf.config import CONFIG_DIR, load_config
from lba_tf.data import synthetic
from lba_tf.data.datasets.llcm import LLCM
from lba_tf.data.datasets.regdb import RegDB
from lba_tf.data.datasets.registry import build_dataset
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.evaluation.protocols import LLCMProtocol, RegDBProtocol, SYSUMM01Protocol
from tests.data.layouts import small_llcm, small_sysu, write_regdb

SMALL_SYNTHETIC = [
    "data.synthetic.num_train_ids=4",
    "data.synthetic.num_test_ids=3",
    "data.synthetic.images_per_camera=1",
    "data.synthetic.image_height=32",
    "data.synthetic.image_width=16",
]


def test_synthetic_without_root_is_generated_under_the_cache_and_read_as_sysu(tmp_path):
    config = load_config(CONFIG_DIR / "synthetic.yaml", SMALL_SYNTHETIC).data
    dataset = build_dataset(config, cache_dir=str(tmp_path))
    assert isinstance(dataset, SYSUMM01) and dataset.protocol.name == "sysu"
    assert dataset.root == os.path.join(str(tmp_path), "synthetic", synthetic.cache_name(config.synthetic))
    assert dataset.num_classes == 4
    assert build_dataset(config, cache_dir=str(tmp_path)).train == dataset.train


def test_synthetic_with_root_reads_that_folder(tmp_path):
    config = load_config(CONFIG_DIR / "synthetic.yaml", SMALL_SYNTHETIC).data
    root = synthetic.generate(str(tmp_path / "pre"), config.synthetic)
    config = load_config(CONFIG_DIR / "synthetic.yaml", [*SMALL_SYNTHETIC, f"data.root={root}"]).data
    dataset = build_dataset(config, cache_dir=str(tmp_path / "unused"))
    assert dataset.root == root and not (tmp_path / "unused").exists()


def test_sysu_gets_search_mode_and_gallery_shots(tmp_path):
    root = small_sysu(tmp_path / "sysu")
    config = load_config(
        CONFIG_DIR / "sysu.yaml", [f"data.root={root}", "data.search_mode=indoor", "data.gallery_shots=multi"]
    ).data
    dataset = build_dataset(config)
    assert isinstance(dataset, SYSUMM01) and dataset.root == str(root)
    assert dataset.protocol == SYSUMM01Protocol(search_mode="indoor", gallery_shots="multi")


def test_regdb_gets_the_trial(tmp_path):
    root = write_regdb(tmp_path / "regdb", [1, 2, 3, 4], images_per_id=1, trials=(4,))
    config = load_config(CONFIG_DIR / "regdb.yaml", [f"data.root={root}", "data.trial=4"]).data
    dataset = build_dataset(config)
    assert isinstance(dataset, RegDB) and dataset.trial == 4 and dataset.protocol == RegDBProtocol(trial=4)


def test_llcm_gets_gallery_shots(tmp_path):
    root = small_llcm(tmp_path / "llcm")
    config = load_config(CONFIG_DIR / "llcm.yaml", [f"data.root={root}", "data.gallery_shots=multi"]).data
    dataset = build_dataset(config)
    assert isinstance(dataset, LLCM) and dataset.protocol == LLCMProtocol(gallery_shots="multi")


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm"])
def test_real_dataset_without_root_names_the_key(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml", ["data.root=null"]).data
    with pytest.raises(ValueError, match=r"data\.root is null"):
        build_dataset(config)
