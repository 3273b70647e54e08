"""``python -m lba_tf.train``: train LbA as a config describes, then evaluate and print the table.

With no ``--config`` it trains on the built-in synthetic dataset (generated on first use), so a
new user sees the whole system work in minutes. Rerunning the same command resumes the newest
unfinished run of the same config; ``--run-dir`` names the directory explicitly.
"""

from __future__ import annotations

import argparse
import sys

from lba_tf.cli import add_config_arguments, config_from_args
from lba_tf.config import ConfigError, check_initialisation
from lba_tf.log import logger
from lba_tf.run_dir import RunDir, RunDirError


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
    config = config_from_args(args)
    try:
        check_initialisation(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        run = RunDir.for_training(config, args.run_dir, fresh=args.fresh)
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info("run directory: %s", run.path)

    from lba_tf.evaluation.results import format_table  # heavy imports after the config is valid
    from lba_tf.training.trainer import Trainer, TrainingDiverged

    trainer = Trainer(config, run, cache_dir=args.cache_dir)
    try:
        payload = trainer.fit(max_steps=args.max_steps)
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
