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


def config_from_args(args: argparse.Namespace) -> Config:
    """Tune the allocator, set up logging and load the config (all before TensorFlow starts).

    A bad config or ``LBA_TF_MALLOC`` value exits with status 2 and its message.
    """
    try:
        tune_allocator()
        setup_logging(args.verbose)
        return load_config(args.config, args.overrides)
    except ValueError as err:  # a ConfigError, or a bad LBA_TF_MALLOC from tune_allocator
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
