"""Command-line plumbing shared by every entry point: --config, --set, --verbose, and what a
``--weights`` argument names."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import re
import sys

from lba_tf.config import Config, ConfigError, load_config
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


def read_config(args: argparse.Namespace, default=None, implied=()) -> Config:
    """Load the config a command line names; nothing here imports TensorFlow.

    Args:
        args: parsed with :func:`add_config_arguments`.
        default: the config file when ``--config`` is not given (``None``: the built-in default).
        implied: ``KEY=VALUE`` settings that hold when ``--config`` is not given, before the
            ``--set`` ones (e.g. what a checkpoint says of its model).

    A bad config exits with status 2 and its message.
    """
    path, overrides = args.config, list(args.overrides)
    if path is None:
        path, overrides = default, [*implied, *overrides]
    try:
        return load_config(path, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def start_runtime(args: argparse.Namespace) -> None:
    """Tune the allocator and set up logging, which imports TensorFlow: call it once the command
    line is known to be good. A bad ``LBA_TF_MALLOC`` value exits with status 2 and its message."""
    try:
        tune_allocator()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(args.verbose)


def config_from_args(args: argparse.Namespace, default=None, implied=()) -> Config:
    """:func:`read_config`, then :func:`start_runtime`: a bad config is reported before TensorFlow loads."""
    config = read_config(args, default, implied)
    start_runtime(args)
    return config


def writable_problem(directory: str | pathlib.Path) -> str | None:
    """Why files cannot be created in ``directory`` (made on the way if missing), or None when they can.

    The nearest existing ancestor decides: it must be a directory this process may write in.
    """
    path = pathlib.Path(directory).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class WeightsError(Exception):
    """A ``--weights`` argument that names nothing usable, or weights that do not fit the config;
    the message says what and why."""


@dataclasses.dataclass(frozen=True)
class WeightsLayout:
    """The model a Keras ``.weights.h5`` file of an LbA model holds, read from the names and shapes
    of its variables (h5py only: no TensorFlow).

    Args:
        depth: the ResNet depth, counted as ResNets name themselves: the stem's convolution, the
            blocks' convolutions (not the downsampling ones) and the classifier.
        width: the stem's output channels.
        method: ``"full"`` when the file holds the alignment's state, else ``"baseline"``.
        num_classes: the classifier's output size; None when there is no classifier.
    """

    depth: int
    width: int
    method: str
    num_classes: int | None

    _BLOCK_CONV = re.compile(r"^encoder/body/layer(\d)/blocks/([^/]+)/conv(\d)/vars/0$")
    _STEM_CONV = "encoder/infrared_stem/conv1/vars/0"

    @classmethod
    def read(cls, path: pathlib.Path) -> WeightsLayout:
        """Read the layout of the weights file ``path``.

        Raises:
            WeightsError: the file is no HDF5 file, or holds no LbA model (e.g. an encoder alone).
        """
        import h5py

        shapes: dict[str, tuple[int, ...]] = {}
        try:
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, obj: shapes.update({name: obj.shape}) if hasattr(obj, "shape") else None)
        except OSError:
            raise WeightsError(f"{path} is not a Keras weights file (HDF5): was it written by training?") from None
        if cls._STEM_CONV not in shapes:
            encoder_only = "infrared_stem/conv1/vars/0" in shapes  # as model.pretrained names
            what = "an encoder alone (ImageNet initialisation), not an" if encoder_only else "no"
            raise WeightsError(f"{path} holds {what} LbA model: pass a run directory or the weights training wrote")
        convs: dict[tuple[str, str], int] = {}
        for name in shapes:
            match = cls._BLOCK_CONV.match(name)
            if match:
                block = match[1], match[2]
                convs[block] = max(convs.get(block, 0), int(match[3]))
        classifier = shapes.get("classifier/vars/0")
        return cls(
            depth=sum(convs.values()) + 2,
            width=shapes[cls._STEM_CONV][-1],
            method="full" if any(name.startswith("alignment/") for name in shapes) else "baseline",
            num_classes=classifier[-1] if classifier else None,
        )

    def differences(self, config: Config) -> dict[str, tuple]:
        """``{config key: (the file's value, the config's)}`` for every model setting that differs."""
        held = {"depth": self.depth, "width": self.width, "method": self.method}
        return {
            f"model.{key}": (value, getattr(config.model, key))
            for key, value in held.items()
            if value != getattr(config.model, key)
        }


LAST_EPOCH = "last epoch"
BEST_ON_TEST = "best on the test set (chosen by the evaluations during training: optimistic)"
GIVEN_FILE = "the file given"


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """What a ``--weights`` argument resolved to.

    Args:
        path: the weights file (``.weights.h5`` or ``.keras``).
        config_path: the config to build the model with (the run's ``config.yaml`` unless
            ``--config`` was given; None for a bare file without ``--config``).
        choice: which weights these are, as reported next to the numbers (``LAST_EPOCH``,
            ``BEST_ON_TEST``, ``GIVEN_FILE``).
        run: the run directory they belong to, if any.
    """

    path: pathlib.Path
    config_path: str | None
    choice: str
    run: RunDir | None = None

    @functools.cached_property
    def layout(self) -> WeightsLayout | None:
        """What a ``.weights.h5`` file says of its model, read on first use (None for a ``.keras``
        file, which carries its own config). Raises :class:`WeightsError` for a file that is none."""
        return WeightsLayout.read(self.path) if self.path.name.endswith(".weights.h5") else None

    @property
    def num_classes(self) -> int | None:
        """The classifier's size, when known: from the run's ``run.json``, else from the file's
        classifier kernel."""
        if self.run is not None:
            return self.run.num_classes
        return self.layout.num_classes if self.layout else None

    def check_fits(self, config: Config) -> None:
        """Check, before any model is built, that ``config`` builds the model these weights are of.

        A run's weights must be loaded with the model settings it was trained with (every
        ``model.*`` key but ``pretrained``: even those the weights' shapes do not show change the
        embedding or belong to the alignment); any weights file must hold the depth, width and
        method the config says, and a run's classifier the size its ``run.json`` says.

        Raises:
            WeightsError: naming each setting that differs, the value the weights need, and the fix.
        """
        if self.run is not None:
            trained = self.run.read_config().model
            changed = {
                f"model.{key}": (value, getattr(config.model, key))
                for key, value in dataclasses.asdict(trained).items()
                if key != "pretrained" and value != getattr(config.model, key)
            }
            if changed:
                raise WeightsError(
                    f"{self.run.path} was trained with {_settings(changed, 0)} ({self.run.config_path.name}), "
                    f"the config given says {_settings(changed, 1)}: leave these out of --config/--set to use "
                    "the run's"
                )
        if self.layout is None:
            return
        changed = self.layout.differences(config)
        if changed:
            fix = " ".join(f"--set {key}={held}" for key, (held, _) in changed.items())
            raise WeightsError(
                f"{self.path} holds a ResNet-{self.layout.depth} of width {self.layout.width} and method "
                f"{self.layout.method}, the config says {_settings(changed, 1)}: pass the config it was trained "
                f"with, or {fix}"
            )
        if self.run is not None and self.layout.num_classes not in (None, self.num_classes):
            raise WeightsError(
                f"{self.path} has a classifier of {self.layout.num_classes} identities, {self.run.info_path} "
                f"says num_classes={self.num_classes}: the weights are another run's"
            )


def _settings(changed: dict[str, tuple], which: int) -> str:
    """``key=value, ...`` of the ``which``-th value of each pair (0: the weights', 1: the config's)."""
    return ", ".join(f"{key}={values[which]}" for key, values in changed.items())


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
            run.info()  # run.json, which says how many identities its classifier has
            run.read_config()
        except (RunDirError, ConfigError) as err:  # the message names the run and what is missing
            raise WeightsError(str(err)) from None
        return WeightsSource(found, config_path or str(run.config_path), BEST_ON_TEST if best else LAST_EPOCH, run)
    if best:
        raise WeightsError(f"--best picks a run directory's best weights; {path} is not a run directory")
    if not path.exists():
        raise WeightsError(f"weights not found: {path}")
    if path.name.endswith(".weights.h5") or path.suffix == ".keras":
        return WeightsSource(path, config_path, GIVEN_FILE)
    raise WeightsError(f"--weights must be a run directory, a .weights.h5 or a .keras file: {path}")


def weights_and_config(args: argparse.Namespace) -> tuple[WeightsSource, Config]:
    """What ``--weights`` (and ``--best``) name and the config they are used with: the run's own
    unless ``--config`` is given, ``--set`` applied; checked to fit each other.

    Raises:
        WeightsError: the weights cannot be used as asked, or do not fit the config.
    """
    source = resolve_weights(args.weights, args.config, args.best)
    args.config = source.config_path
    config = read_config(args)
    source.check_fits(config)
    return source, config


def load_model(source: WeightsSource, config: Config, num_classes: int | None = None):
    """The model of ``source``: a ``.keras`` file as saved, else built from ``config`` (with
    ``num_classes`` identities, default ``source.num_classes``) and its weights loaded.

    Raises:
        WeightsError: the config builds no model, or the file does not load or does not fit the
            model (the message names the first variable Keras could not place).
    """
    import keras

    from lba_tf.models.lba import build_model

    if source.path.suffix == ".keras":
        try:
            return keras.saving.load_model(source.path)
        except (ValueError, OSError) as err:
            raise WeightsError(f"{source.path} is not a .keras model that loads: {_first_line(err)}") from None
    try:
        model = build_model(config.replace(**{"model.pretrained": None}), num_classes or source.num_classes)
    except ValueError as err:  # settings that only the model's layers check, e.g. the alignment's batch layout
        raise WeightsError(f"the config builds no model: {_first_line(err)}") from None
    try:
        model.load_weights(source.path)
    except (ValueError, OSError) as err:
        raise WeightsError(
            f"{source.path} does not load into the model the config builds: {_first_line(err)}"
        ) from None
    return model


def _first_line(err: Exception) -> str:
    """The first line of an exception's message (Keras appends long listings), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
