"""Command-line plumbing shared by every entry point: --config, --set, --verbose."""

from __future__ import annotations

import argparse
import sys

from lba_tf.config import Config, load_config
from lba_tf.log import setup_logging
from lba_tf.runtime import tune_allocator


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``, ``--set KEY=VALUE`` (repeatable) and ``--verbose``."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML config (default: configs/synthetic.yaml, the built-in synthetic set)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config value, parsed as YAML, e.g. --set train.lr=0.05 (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="debug logs, and TensorFlow's own log output")


def config_from_args(args: argparse.Namespace, default=None, implied=()) -> Config:
    """Tune the allocator, set up logging and load the config (all before TensorFlow starts).

    Args:
        args: parsed with :func:`add_config_arguments`.
        default: the config file when ``--config`` is not given (``None``: the built-in default).
        implied: ``KEY=VALUE`` settings that hold when ``--config`` is not given, before the
            ``--set`` ones (e.g. what a checkpoint says of its model).

    A bad config or ``LBA_TF_MALLOC`` value exits with status 2 and its message.
    """
    path, overrides = args.config, list(args.overrides)
    if path is None:
        path, overrides = default, [*implied, *overrides]
    try:
        tune_allocator()
        setup_logging(args.verbose)
        return load_config(path, overrides)
    except ValueError as err:  # a ConfigError, or a bad LBA_TF_MALLOC from tune_allocator
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
