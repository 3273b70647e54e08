"""Configuration: typed, immutable run settings loaded from YAML with inheritance and overrides.

The package keeps the data apart from the machinery: :mod:`~lba_tf.config.schema` holds the
sections and documents every field, :mod:`~lba_tf.config.loader` reads, merges, overrides and
validates them, :mod:`~lba_tf.config.initialisation` checks that training chose its starting
weights and :mod:`~lba_tf.config.batch_layout` that its batches can be paired. The recipe's
values live in ``configs/base.yaml`` only.

Examples:

>>> cfg = load_config("configs/synthetic.yaml", overrides=["train.lr=0.05"])
>>> cfg.train.lr
0.05
"""

from lba_tf.config.batch_layout import check_batch_layout
from lba_tf.config.initialisation import RANDOM_INIT, check_initialisation
from lba_tf.config.loader import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    ConfigError,
    load_config,
    parse_override,
    replace_config,
    save_config,
)
from lba_tf.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ExportConfig,
    LossConfig,
    ModelConfig,
    SyntheticConfig,
    TrainConfig,
)

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "RANDOM_INIT",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "LossConfig",
    "ModelConfig",
    "SyntheticConfig",
    "TrainConfig",
    "check_batch_layout",
    "check_initialisation",
    "load_config",
    "parse_override",
    "replace_config",
    "save_config",
]
