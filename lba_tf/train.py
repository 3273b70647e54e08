"""``python -m lba_tf.train``: train LbA as a config describes, then evaluate and print the table.

With no ``--config`` it trains on the built-in synthetic dataset (generated on first use), so a
new user sees the whole system work in minutes. Rerunning the same command resumes the newest
unfinished run of the same config; ``--run-dir`` names the directory explicitly.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

import yaml

from lba_tf.cli import add_config_arguments, config_from_args
from lba_tf.config import Config, ConfigError, check_initialisation, save_config
from lba_tf.log import logger


def _unfinished_run(base: pathlib.Path, config: Config) -> pathlib.Path | None:
    """The newest run under ``base`` with the same resolved config and no results yet."""
    if not base.is_dir():
        return None
    for run in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        saved = run / "config.yaml"
        if (saved.exists() and not (run / "results.json").exists()
                and yaml.safe_load(saved.read_text()) == config.to_dict()):
            return run
    return None


def _new_run_path(base: pathlib.Path) -> pathlib.Path:
    """``base/<timestamp>``, with a suffix when a run started in the same second."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = base / stamp, 1
    while path.exists():
        path, n = base / f"{stamp}-{n}", n + 1
    return path


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def resolve_run_dir(config: Config, run_dir: str | None, runs_root: str = "runs", fresh: bool = False) -> pathlib.Path:
    """Pick the run directory and write the resolved config there.

    An explicit ``run_dir`` holding a different config is an error (its checkpoints belong to
    other settings); without one, the newest unfinished run of the same config is resumed
    unless ``fresh``, else a new ``runs/<config name>/<timestamp>`` is made.
    """
    if run_dir is not None:
        path = pathlib.Path(run_dir)
        saved = path / "config.yaml"
        if saved.exists():
            diff = _differences(yaml.safe_load(saved.read_text()), config.to_dict())
            if diff:
                raise SystemExit(f"error: {path} holds a run with another config ({'; '.join(diff)}); "
                                 "use another --run-dir")
    else:
        base = pathlib.Path(runs_root) / config.name
        found = None if fresh else _unfinished_run(base, config)
        if found is not None:
            logger.info("resuming the unfinished run %s (pass --fresh to start anew)", found)
        path = found or _new_run_path(base)
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, path / "config.yaml")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lba_tf.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--run-dir", metavar="DIR", default=None,
                        help="where checkpoints, TensorBoard logs, weights and results go "
                             "(default: runs/<config name>/<timestamp>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start a new run even if an unfinished one with this config exists")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop after N optimizer steps in all (smoke tests); evaluation still runs")
    parser.add_argument("--cache-dir", default=".cache", metavar="DIR",
                        help="where the synthetic dataset is generated (default: .cache)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    try:
        check_initialisation(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = resolve_run_dir(config, args.run_dir, fresh=args.fresh)
    logger.info("run directory: %s", run_dir)

    from lba_tf.evaluation.runner import format_table  # heavy imports after the config is valid
    from lba_tf.training.trainer import Trainer, TrainingDiverged

    trainer = Trainer(config, run_dir, cache_dir=args.cache_dir)
    try:
        payload = trainer.fit(max_steps=args.max_steps)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    results = trainer.last_results
    print()
    print(f"run: {run_dir}  ({payload['step']} steps, {payload['train_seconds']:.0f} s of training)")
    print(format_table(results))
    print(f"results: {run_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
