"""The dataset named by ``data.dataset``: one reader per dataset, the synthetic set generated on use."""

from __future__ import annotations

import os

from lba_tf.config import ConfigError, DataConfig
from lba_tf.data.datasets.llcm import LLCM
from lba_tf.data.datasets.regdb import RegDB
from lba_tf.data.datasets.sysu import SYSUMM01
from lba_tf.data.records import ReIDDataset
from lba_tf.data.synthetic import ensure_synthetic


def build_dataset(data_config: DataConfig, cache_dir: str = ".cache") -> ReIDDataset:
    """Read the dataset of a ``data`` config section.

    ``sysu``, ``regdb`` and ``llcm`` read ``data.root`` with their reader (``search_mode`` and
    ``gallery_shots`` for SYSU-MM01, ``trial`` for RegDB, ``gallery_shots`` for LLCM).
    ``synthetic`` reads ``data.root`` if it is set, else the set generated from
    ``data.synthetic`` under ``<cache_dir>/synthetic/`` (generated on first use); either way with
    the SYSU-MM01 reader and protocol.

    Args:
        data_config: the ``data`` section.
        cache_dir: the folder for generated data.

    Raises:
        ConfigError: ``data.root`` is null for a real dataset, or is not a folder.
        DatasetError: the dataset folder is incomplete or malformed.
    """
    name, root = data_config.dataset, data_config.root
    if root is None and name != "synthetic":
        raise ConfigError(
            f"data.root is null: set it to the {name} dataset folder (e.g. --set data.root=/path/to/{name})"
        )
    if root is not None and not os.path.isdir(root):
        raise ConfigError(
            f"data.root: {root}: folder not found; set it to the {name} dataset folder "
            f"(e.g. --set data.root=/path/to/{name})"
        )
    if name == "synthetic":
        if root is None:
            root = ensure_synthetic(data_config.synthetic, os.path.join(cache_dir, "synthetic"))
        return SYSUMM01(root, data_config.search_mode, data_config.gallery_shots)
    if name == "sysu":
        return SYSUMM01(root, data_config.search_mode, data_config.gallery_shots)
    if name == "regdb":
        return RegDB(root, data_config.trial)
    if name == "llcm":
        return LLCM(root, data_config.gallery_shots)
    raise ValueError(f"data.dataset: unknown dataset {name!r}")
