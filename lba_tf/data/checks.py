"""Checks of training data against the configured batches, from the file listing alone.

They run before any image is decoded (and before TensorFlow loads), so that a dataset that
cannot fill the batches is refused in a second rather than after minutes of decoding.
"""

from __future__ import annotations

from lba_tf.config import ConfigError, DataConfig
from lba_tf.data.datasets.registry import build_dataset
from lba_tf.data.synthetic import split_identities


def check_training_data(data_config: DataConfig) -> None:
    """Check that the training set can fill batches of P identities.

    A real dataset (or ``data.root`` given for ``synthetic``) is listed by its reader, which also
    refuses a malformed tree and a training identity without images in one modality. The
    generated synthetic set is not generated here: its identities follow from ``data.synthetic``.

    Args:
        data_config: the ``data`` section.

    Raises:
        ConfigError: ``data.root`` is null or not a folder, or ``data.num_identities`` (P) is
            larger than the number of training identities.
        DatasetError: the dataset folder is incomplete or malformed, or a training identity has
            images in one modality only (the message names it and the modality).
    """
    p = data_config.num_identities
    if data_config.dataset == "synthetic" and data_config.root is None:
        splits = split_identities(data_config.synthetic)
        count = len(splits["train"]) + len(splits["val"])
        source = f"the synthetic training set (data.synthetic.num_train_ids={data_config.synthetic.num_train_ids})"
        fix = f"set data.num_identities to at most {count} or data.synthetic.num_train_ids to at least {p}"
    else:
        count = build_dataset(data_config).num_classes
        source = f"the training set of {data_config.root}"
        fix = f"set data.num_identities to at most {count}"
    if p > count:
        raise ConfigError(f"data.num_identities={p} identities per batch, but {source} has only {count}: {fix}")
