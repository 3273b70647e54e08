"""The run directory: the layout of one training run, and every read and write of it.

Training writes a run, evaluation and export read it, the Makefile finds the newest finished
one; all of them go through :class:`RunDir`, so the layout is written down once::

    <run>/config.yaml                 the resolved config (the run's model and recipe)
    <run>/run.json                    what the config does not say: classes, steps per epoch
    <run>/checkpoints/                model, optimizer and step, for resuming
    <run>/tensorboard/                summaries and pictures
    <run>/pictures/                   each evaluation's ranked lists, as PNG files
    <run>/weights/last.weights.h5     the last epoch's weights (what is evaluated and exported)
    <run>/weights/best.weights.h5     the epoch whose evaluation scored highest (test set: optimistic)
    <run>/best.json                   that score, its step and what it was chosen on
    <run>/results.json                the last epoch's evaluation; present once the run finished
    <run>/evaluation*.json            later evaluations by ``python -m lba_tf.evaluate``

``python -m lba_tf.run_dir newest [CONFIG_NAME]`` prints the newest finished run (the Makefile's
``export`` target uses it).
"""

from __future__ import annotations

import datetime
import json
import pathlib
import sys
from collections.abc import Iterator
from typing import Any, Literal

import yaml

from lba_tf.config import Config, load_config, save_config
from lba_tf.log import logger

RUNS_ROOT = "runs"
WeightsChoice = Literal["last", "best"]


ADDED_SETTINGS = {"train.deterministic": "false"}
"""Settings added after runs were first written, with the value such a run ran with."""


def _holds(tree: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


class RunDirError(Exception):
    """A run directory that cannot be used as asked; the message names it and says why."""


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


class RunDir:
    """One run's directory (see the module docstring for its layout).

    Args:
        path: the directory; it need not exist yet.

    Examples:

    >>> run = RunDir.for_training(config)  # doctest: +SKIP
    >>> run.weights("last")  # doctest: +SKIP
    PosixPath('runs/synthetic/20261202-010203/weights/last.weights.h5')
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- layout ------------------------------------------------------------------------------
    @property
    def config_path(self) -> pathlib.Path:
        return self.path / "config.yaml"

    @property
    def info_path(self) -> pathlib.Path:
        return self.path / "run.json"

    @property
    def best_path(self) -> pathlib.Path:
        return self.path / "best.json"

    @property
    def results_path(self) -> pathlib.Path:
        return self.path / "results.json"

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> pathlib.Path:
        return self.path / "tensorboard"

    def weights(self, choice: WeightsChoice = "last") -> pathlib.Path:
        """``weights/last.weights.h5`` or ``weights/best.weights.h5``."""
        if choice not in ("last", "best"):
            raise ValueError(f"weights choice must be 'last' or 'best', got {choice!r}")
        return self.path / "weights" / f"{choice}.weights.h5"

    def ranked_picture_path(self, direction: str, step: int) -> pathlib.Path:
        """``pictures/ranked_<direction>_step<N>.png``: the ranked lists of the evaluation at
        global step ``step``."""
        return self.path / "pictures" / f"ranked_{direction}_step{step}.png"

    def evaluation_path(self, choice: WeightsChoice = "last") -> pathlib.Path:
        """Where ``python -m lba_tf.evaluate`` writes its table for those weights."""
        return self.path / ("evaluation-best-on-test.json" if choice == "best" else "evaluation.json")

    # -- state ---------------------------------------------------------------------------------
    @staticmethod
    def is_run(path: str | pathlib.Path) -> bool:
        """Whether ``path`` is a run directory (a folder holding a ``config.yaml``)."""
        return (pathlib.Path(path) / "config.yaml").is_file()

    @property
    def has_checkpoint(self) -> bool:
        """Whether training saved its state here (a ``checkpoints/ckpt-*.index`` file); a run
        without one never got that far and holds nothing to resume."""
        return any(self.checkpoints.glob("ckpt-*.index"))

    @property
    def finished(self) -> bool:
        """A run is finished once its final evaluation is written."""
        return self.results_path.is_file()

    def read_config(self, overrides=()) -> Config:
        """The run's resolved config (``--set`` style ``overrides`` applied on top); a setting
        added since the run was written takes the value the run ran with (:data:`ADDED_SETTINGS`)."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path}: no config.yaml (is it a run directory?)")
        tree = yaml.safe_load(self.config_path.read_text()) or {}
        added = [f"{key}={value}" for key, value in ADDED_SETTINGS.items() if not _holds(tree, key)]
        return load_config(self.config_path, [*added, *overrides])

    def write_config(self, config: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(config, self.config_path)

    def write_info(self, *, num_classes: int, steps_per_epoch: int, image_height: int, image_width: int) -> None:
        """What rebuilding the model needs beyond the config: ``num_classes`` above all."""
        self._write_json(
            self.info_path,
            {
                "num_classes": num_classes,
                "steps_per_epoch": steps_per_epoch,
                "image_height": image_height,
                "image_width": image_width,
            },
        )

    def info(self) -> dict[str, Any]:
        if not self.info_path.is_file():
            raise RunDirError(f"{self.path}: no run.json (the run never started training)")
        return json.loads(self.info_path.read_text())

    @property
    def num_classes(self) -> int:
        """The number of training identities of the run's classifier (from ``run.json``)."""
        return int(self.info()["num_classes"])

    def read_best(self) -> dict[str, Any] | None:
        """``{"score", "step", "chosen_on"}`` of the best evaluation so far, or None."""
        return json.loads(self.best_path.read_text()) if self.best_path.is_file() else None

    def write_best(self, score: float, step: int) -> None:
        self._write_json(self.best_path, {"score": score, "step": step, "chosen_on": "the test set"})

    def write_results(self, payload: dict[str, Any]) -> None:
        """The final evaluation; writing it marks the run finished."""
        self._write_json(self.results_path, payload)

    def existing_weights(self, choice: WeightsChoice = "last") -> pathlib.Path:
        """The weights file of ``choice``, which must exist."""
        path = self.weights(choice)
        if not path.is_file():
            raise RunDirError(f"{self.path} has no weights/{path.name} (is it a finished run directory?)")
        return path

    def load_model(self, choice: WeightsChoice = "last", overrides=()):
        """The run's model rebuilt from its config and ``run.json``, with the chosen weights.

        ``overrides`` may change what does not change the weights' shapes (e.g. ``data.root``).
        """
        from lba_tf.models.lba import build_model

        weights = self.existing_weights(choice)
        config = self.read_config(overrides).replace(**{"model.pretrained": None})
        model = build_model(config, self.num_classes)
        model.load_weights(weights)
        return model

    @staticmethod
    def _write_json(path: pathlib.Path, payload: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)

    # -- finding runs -------------------------------------------------------------------------------
    @classmethod
    def for_training(
        cls, config: Config, run_dir: str | None = None, runs_root: str = RUNS_ROOT, fresh: bool = False
    ) -> RunDir:
        """The run to train ``config`` in, with the resolved config written there.

        An explicit ``run_dir`` holding a run of a different config with checkpoints is refused
        (they belong to other settings); one without checkpoints (a start that failed) takes the
        new config, and the log says which settings changed. Without ``run_dir``, the newest
        unfinished run of the same config is resumed unless ``fresh``, preferring one with
        checkpoints to newer ones without; else a new ``<runs_root>/<config name>/<timestamp>``.

        Raises:
            RunDirError: ``run_dir`` holds checkpoints of another config (the message lists the
                settings).
        """
        if run_dir is not None:
            run = cls(run_dir)
            if run.config_path.is_file():
                diff = _differences(yaml.safe_load(run.config_path.read_text()), config.to_dict())
                if diff and run.has_checkpoint:
                    raise RunDirError(
                        f"{run.path} holds a run with another config ({'; '.join(diff)}); use another --run-dir"
                    )
                if diff:
                    logger.warning(
                        "%s held the config of a run that saved no checkpoint; it now holds this one (%s)",
                        run.path,
                        "; ".join(diff),
                    )
        else:
            base = pathlib.Path(runs_root) / config.name
            unfinished = [] if fresh else list(cls._runs(base, config=config, finished=False))
            run = next((r for r in unfinished if r.has_checkpoint), unfinished[0] if unfinished else None)
            run = run or cls(cls._new_path(base))
        run.write_config(config)
        return run

    @classmethod
    def newest(cls, base: str | pathlib.Path, *, config: Config | None = None, finished: bool = True) -> RunDir | None:
        """The newest run directly under ``base`` that is finished (or unfinished, with
        ``finished=False``) and, when ``config`` is given, holds that resolved config."""
        return next(cls._runs(base, config=config, finished=finished), None)

    @classmethod
    def _runs(cls, base: str | pathlib.Path, *, config: Config | None, finished: bool) -> Iterator[RunDir]:
        """The runs of :meth:`newest`, newest first."""
        base = pathlib.Path(base)
        if not base.is_dir():
            return
        for path in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
            run = cls(path)
            if not run.config_path.is_file() or run.finished != finished:
                continue
            if config is None or yaml.safe_load(run.config_path.read_text()) == config.to_dict():
                yield run

    @staticmethod
    def _new_path(base: pathlib.Path) -> pathlib.Path:
        """``base/<timestamp>``, with a suffix when a run started in the same second."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = base / stamp, 1
        while path.exists():
            path, n = base / f"{stamp}-{n}", n + 1
        return path


def main(argv: list[str] | None = None) -> int:
    """``python -m lba_tf.run_dir newest [CONFIG_NAME] [--runs-root DIR]``: print the newest
    finished run of that config (default ``synthetic``), or say there is none (exit 2)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lba_tf.run_dir", description=main.__doc__)
    parser.add_argument("command", choices=["newest"])
    parser.add_argument("config_name", nargs="?", default="synthetic")
    parser.add_argument("--runs-root", default=RUNS_ROOT, metavar="DIR")
    args = parser.parse_args(argv)
    run = RunDir.newest(pathlib.Path(args.runs_root) / args.config_name)
    if run is None:
        print(
            f"error: no finished run under {pathlib.Path(args.runs_root) / args.config_name}: "
            "run 'make demo' or pass RUN=<run dir>",
            file=sys.stderr,
        )
        return 2
    print(run.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
