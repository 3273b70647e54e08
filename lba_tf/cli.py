"""Command-line plumbing shared by every entry point: --config, --set, --verbose, and what a
``--weights`` argument names."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from lba_tf.config import Config, load_config
from lba_tf.log import setup_logging
from lba_tf.run_dir import RunDir, RunDirError
from lba_tf.runtime import tune_allocator


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``, ``--set KEY=VALUE`` (repeatable) and ``--verbose``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config (default: configs/synthetic.yaml, the built-in synthetic set)",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config value, parsed as YAML, e.g. --set train.lr=0.05 (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs, and TensorFlow's own log output")


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


LAST_EPOCH = "last epoch"
BEST_ON_TEST = "best on the test set (chosen by the evaluations during training: optimistic)"
GIVEN_FILE = "the file given"


class WeightsError(Exception):
    """A ``--weights`` argument that names nothing usable; the message says what and why."""


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """What a ``--weights`` argument resolved to.

    Args:
        path: the weights file (``.weights.h5`` or ``.keras``).
        config_path: the config to build the model with (the run's ``config.yaml`` unless
            ``--config`` was given; None for a bare file without ``--config``).
        num_classes: the classifier's size, when known (from the run's ``run.json``; for a bare
            ``.weights.h5`` file, from its classifier kernel).
        choice: which weights these are, as reported next to the numbers (``LAST_EPOCH``,
            ``BEST_ON_TEST``, ``GIVEN_FILE``).
        run: the run directory they belong to, if any.
    """

    path: pathlib.Path
    config_path: str | None
    num_classes: int | None
    choice: str
    run: RunDir | None = None


def add_weights_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--weights PATH`` (required; ``what`` is its help) and ``--best``."""
    parser.add_argument("--weights", required=True, metavar="PATH", help=what)
    parser.add_argument(
        "--best",
        action="store_true",
        help="with a run directory: weights/best.weights.h5, the epoch that scored highest "
        "on the test set during training (optimistic, labelled so) instead of the last "
        "epoch's",
    )


def resolve_weights(weights: str, config_path: str | None, best: bool = False) -> WeightsSource:
    """Resolve a ``--weights`` argument.

    A run directory gives its last epoch's weights (what the authors report) and its config, or
    with ``best`` the epoch whose evaluation on the test set scored highest, which overstates
    accuracy and is labelled ``BEST_ON_TEST``. A file is used as it is.

    Raises:
        WeightsError: nothing usable at ``weights``, or ``best`` without a run directory.
    """
    path = pathlib.Path(weights)
    if RunDir.is_run(path):
        run = RunDir(path)
        choice = "best" if best else "last"
        try:
            found = run.existing_weights(choice)
            num_classes = run.num_classes
        except RunDirError as err:  # the message names the run and what is missing
            raise WeightsError(str(err)) from None
        return WeightsSource(
            found, config_path or str(run.config_path), num_classes, BEST_ON_TEST if best else LAST_EPOCH, run
        )
    if best:
        raise WeightsError(f"--best picks a run directory's best weights; {path} is not a run directory")
    if not path.exists():
        raise WeightsError(f"weights not found: {path}")
    if path.name.endswith(".weights.h5"):
        return WeightsSource(path, config_path, classes_in_weights(path), GIVEN_FILE)
    if path.suffix == ".keras":
        return WeightsSource(path, config_path, None, GIVEN_FILE)
    raise WeightsError(f"--weights must be a run directory, a .weights.h5 or a .keras file: {path}")


def classes_in_weights(path: pathlib.Path) -> int | None:
    """The classifier's output size stored in a bare Keras weights file, if there is one (a file
    outside a run directory says nothing else about the model it belongs to)."""
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                found.append(obj.shape[-1])
                if "classifier" in name and hasattr(obj, "shape") and len(obj.shape) == 2
                else None
            )
        )
    return found[0] if found else None
