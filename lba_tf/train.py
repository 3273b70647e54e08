"""``python -m lba_tf.train``: train LbA as a config describes, then evaluate and print the table.

With no ``--config`` it trains on the built-in synthetic dataset (generated on first use), so a
new user sees the whole system work in minutes. Rerunning the same command resumes the newest
unfinished run of the same config; ``--run-dir`` names the directory explicitly.

The config, the batch layout and the dataset's file listing are checked before TensorFlow loads,
so a mistake there is one line on stderr (exit status 2) within a second.
"""

from __future__ import annotations

import argparse
import sys

from lba_tf.cli import add_config_arguments
from lba_tf.config import Config, check_batch_layout, check_initialisation, load_config
from lba_tf.data.errors import DataError
from lba_tf.log import logger, setup_logging
from lba_tf.run_dir import RunDir, RunDirError
from lba_tf.runtime import tune_allocator


def checked_config(args: argparse.Namespace) -> Config:
    """The config of the command line, checked for training before TensorFlow loads.

    Tunes the allocator (before TensorFlow starts its threads), loads the config and checks the
    initialisation, the batch layout and the training set's listing. Logging, which imports
    TensorFlow, is set up after.

    Raises:
        ValueError: a :class:`~lba_tf.config.ConfigError`, a
            :class:`~lba_tf.data.errors.DataError` or a bad ``LBA_TF_MALLOC``; one line.
    """
    tune_allocator()
    config = load_config(args.config, args.overrides)
    check_initialisation(config)
    check_batch_layout(config)
    from lba_tf.data.checks import check_training_data  # the readers bring numpy and the protocols

    check_training_data(config.data)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        default=None,
        help="where checkpoints, TensorBoard logs, weights and results go (default: runs/<config name>/<timestamp>)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="start a new run even if an unfinished one with this config exists"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop after N optimizer steps in all (smoke tests); evaluation still runs",
    )
    parser.add_argument(
        "--cache-dir",
        default=".cache",
        metavar="DIR",
        help="where the synthetic dataset is generated (default: .cache)",
    )
    args = parser.parse_args(argv)
    try:
        config = checked_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    try:
        run = RunDir.for_training(config, args.run_dir, fresh=args.fresh)
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info("run directory: %s", run.path)

    from lba_tf.evaluation.results import format_table  # heavy imports after the config is valid
    from lba_tf.training.checkpoints import CheckpointError
    from lba_tf.training.trainer import Trainer, TrainingDiverged

    try:
        trainer = Trainer(config, run, cache_dir=args.cache_dir)
        payload = trainer.fit(max_steps=args.max_steps)
    except (DataError, CheckpointError) as err:  # found while decoding, or every checkpoint damaged
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    results = trainer.last_results
    print()
    print(f"run: {run.path}  ({payload['step']} steps, {payload['train_seconds']:.0f} s of training)")
    print(format_table(results))
    print(f"results: {run.results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
