"""``python -m lba_tf.study``: variants of one config, each trained over several seeds, tabulated
as the mean and sample standard deviation of every metric.

A study is a YAML file::

    base: configs/synthetic.yaml       # the config of every run: relative to the study file or the repository
    seeds: [0, 1, 2]                   # train.seed of each run
    set: [train.epochs=20]             # optional: overrides of every run
    variants:                          # name -> its own overrides (may be empty)
      baseline: [model.method=baseline]
      full: [model.method=full]

Each run is an ordinary run directory of ``python -m lba_tf.train``, ``<out>/<variant>/seed<N>``,
trained in a subprocess (``--set train.seed=N``, then the study's ``set:``, the variant's and the
command line's ``--set``), its output appended to ``<run>/train.log``. A finished run (as
:class:`~lba_tf.run_dir.RunDir` tells) is skipped, an unfinished one resumed by the same command,
and a failing one stops the study with one line naming it and its log. Then ``<out>/study.md``
and ``<out>/study.json`` hold, per direction and variant, each metric's mean over seeds and its
sample standard deviation (ddof=1; none for one seed), the number of seeds and the chance level.

The study file, the seeds, ``--only`` and every variant's resolved config are checked before any
run starts (and a run directory holding another config is refused); a mistake is one line on
stderr and exit status 2, as ``python -m lba_tf.train``'s.

Examples::

    python -m lba_tf.study configs/studies/ablation.yaml                 # or: make study STUDY=...
    python -m lba_tf.study configs/studies/ablation.yaml --seeds 0,1 --only baseline,full --set train.epochs=2
    python -m lba_tf.study configs/studies/ablation.yaml --table-only    # tabulate the finished runs only
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import json
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from lba_tf.config import CONFIG_DIR, Config, ConfigError, load_config, parse_override
from lba_tf.evaluation.results import COLUMNS
from lba_tf.run_dir import RunDir, RunDirError, _differences
from lba_tf.train import checked_config

REPO = CONFIG_DIR.parent
"""The repository, against which a study's ``base`` is also looked up."""
STUDY_KEYS = ("base", "seeds", "set", "variants")
"""The top-level keys of a study file."""
SEED_KEY = "train.seed"
"""The setting the seeds set; no override may set it."""
_VARIANT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A variant's name is a folder name."""


class StudyError(ValueError):
    """A study that cannot run as asked; the message is one line naming the file, flag or variant."""


class RunFailed(Exception):
    """A run of the study failed; the message names it, its exit status and its log."""


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: variants of one config, each trained once per seed.

    Args:
        path: the study file.
        base: the config every run starts from, its path resolved.
        seeds: the ``train.seed`` of each run of a variant.
        shared: ``KEY=VALUE`` overrides of every run (the file's ``set:``), applied after the seed.
        variants: name -> its own ``KEY=VALUE`` overrides, applied after ``shared``.
        command_line: ``KEY=VALUE`` overrides of every run given by ``--set``, applied last.
    """

    path: pathlib.Path
    base: pathlib.Path
    seeds: tuple[int, ...]
    shared: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    command_line: tuple[str, ...] = ()

    def overrides(self, variant: str, seed: int) -> list[str]:
        """The ``--set`` overrides of one run, in the order they apply."""
        return [f"{SEED_KEY}={seed}", *self.shared, *self.variants[variant], *self.command_line]

    def narrowed(self, seeds: Sequence[int] | None, only: Sequence[str] | None, extra: Sequence[str]) -> Study:
        """The study with the command line's ``--seeds`` and ``--only`` (when given) and its ``--set``
        overrides, which apply after the file's.

        Raises:
            StudyError: a variant of ``only`` the study does not have, or an override of the seed.
        """
        unknown = [name for name in only or () if name not in self.variants]
        if unknown:
            raise StudyError(
                f"--only {','.join(only)}: no variant {unknown[0]!r} in {self.path} "
                f"(its variants: {', '.join(self.variants)})"
            )
        _check_overrides(extra, None)
        return dataclasses.replace(
            self,
            seeds=tuple(seeds) if seeds is not None else self.seeds,
            command_line=(*self.command_line, *extra),
            variants={k: v for k, v in self.variants.items() if only is None or k in only},
        )


def read_study(path: str | pathlib.Path) -> Study:
    """Read and check a study file (its structure; the configs are checked by :func:`plan`).

    Raises:
        StudyError: a missing or unreadable file, an unknown top-level key, a base config that
            is not found, seeds that are not distinct non-negative integers, overrides that are not
            ``KEY=VALUE`` strings or that set the seed, no variants or a bad variant name.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(tree, dict):
        raise StudyError(f"{path}: expected a mapping with {', '.join(STUDY_KEYS)}, got {tree!r}")
    for key in tree:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), STUDY_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(STUDY_KEYS)}"
            raise StudyError(f"{path}: unknown key '{key}'; {hint}")
    for key in ("base", "seeds", "variants"):
        if key not in tree:
            raise StudyError(f"{path}: missing key '{key}'")
    shared = _override_list(tree.get("set"), f"{path}: set")
    variants = tree["variants"]
    if not isinstance(variants, dict) or not variants:
        raise StudyError(f"{path}: variants: expected a mapping of names to lists of KEY=VALUE, got {variants!r}")
    for name in variants:
        if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
            raise StudyError(f"{path}: variants: {name!r} is not a folder name (letters, digits, '_', '.', '-')")
    return Study(
        path=path,
        base=_base_config(tree["base"], path),
        seeds=parse_seeds(tree["seeds"], f"{path}: seeds"),
        shared=tuple(shared),
        variants={name: tuple(_override_list(v, f"{path}: variants.{name}")) for name, v in variants.items()},
    )


def _base_config(base: Any, study_path: pathlib.Path) -> pathlib.Path:
    """The base config, relative to the study file or else to the repository."""
    if not isinstance(base, str):
        raise StudyError(f"{study_path}: base: expected a config file name, got {base!r}")
    candidates = (study_path.parent / base, REPO / base)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        looked = f"looked in {study_path.parent} and {REPO}"
        raise StudyError(f"{study_path}: base: {base}: config file not found ({looked})")
    return found.resolve()


def parse_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    """Seeds from a YAML list or a ``0,1,2`` string, checked distinct non-negative integers.

    Raises:
        StudyError: naming ``where`` and the bad seed.
    """
    items = seeds.split(",") if isinstance(seeds, str) else seeds
    if not isinstance(items, list) or not items:
        raise StudyError(f"{where}: expected a list of seeds, e.g. [0, 1, 2], got {seeds!r}")
    out = []
    for item in items:
        value = item.strip() if isinstance(item, str) else item
        if isinstance(value, str) and re.fullmatch(r"\d+", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StudyError(f"{where}: {item!r} is not a seed (a non-negative integer)")
        if value in out:
            raise StudyError(f"{where}: seed {value} is listed twice")
        out.append(value)
    return tuple(out)


def _override_list(value: Any, where: str) -> list[str]:
    """A list of ``KEY=VALUE`` strings (null: none), checked by :func:`_check_overrides`."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where}: expected a list of KEY=VALUE strings, got {value!r}")
    _check_overrides(value, where)
    return value


def _check_overrides(overrides: Sequence[str], where: str | None) -> None:
    """Each is ``KEY=VALUE`` and none sets the seed, which is the study's; ``where`` is the place
    in the study file (None: the command line)."""
    for text in overrides:
        try:
            key, _ = parse_override(text)
        except ConfigError as err:
            raise StudyError(f"{where}: {err}" if where else str(err)) from None
        if key == SEED_KEY:
            source = f"{where}: {text}" if where else f"--set {text}"
            raise StudyError(f"{source}: {SEED_KEY} is set by the study's seeds (or --seeds), not an override")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a study.

    Args:
        variant: the variant's name.
        seed: its ``train.seed``.
        dir: its run directory, ``<out>/<variant>/seed<N>``.
        overrides: the ``--set`` overrides it is trained with.
    """

    variant: str
    seed: int
    dir: RunDir
    overrides: tuple[str, ...]

    @property
    def log(self) -> pathlib.Path:
        """Where the trainer's stdout and stderr go, appended."""
        return self.dir.path / "train.log"

    def command(self, base: pathlib.Path, cache_dir: str) -> list[str]:
        """The ``python -m lba_tf.train`` command line that trains (or resumes) it."""
        sets = [arg for text in self.overrides for arg in ("--set", text)]
        train = [sys.executable, "-m", "lba_tf.train", "--config", str(base), "--run-dir", str(self.dir.path)]
        return [*train, "--cache-dir", cache_dir, *sets]


def plan(study: Study, out: str | pathlib.Path, *, training: bool = True) -> list[Run]:
    """The runs of ``study`` under ``out``, variant by variant, each checked before any work.

    Every variant's config is checked as ``python -m lba_tf.train`` checks it (with ``training``:
    its initialisation, batch layout and training set's listing too), and a run directory that
    already trained holds the run's resolved config.

    Raises:
        StudyError: naming the variant (and the key) or the run directory.
    """
    runs = []
    for variant in study.variants:
        for seed in study.seeds:
            overrides = study.overrides(variant, seed)
            try:
                if training and seed == study.seeds[0]:
                    checked_config(argparse.Namespace(config=str(study.base), overrides=overrides))
                config = load_config(study.base, overrides)
            except ValueError as err:  # a ConfigError, or the data listing's DataError
                raise StudyError(f"variant {variant!r}: {err}") from None
            run = Run(variant, seed, RunDir(pathlib.Path(out) / variant / f"seed{seed}"), tuple(overrides))
            _check_holds(run.dir, config)
            runs.append(run)
    return runs


def _check_holds(run: RunDir, config: Config) -> None:
    """A run directory that trained (or finished) must hold ``config``."""
    if not (run.finished or run.has_checkpoint):
        return
    try:
        held = run.read_config().to_dict()
    except (RunDirError, ConfigError) as err:
        raise StudyError(str(err)) from None
    diff = _differences(held, config.to_dict())
    if diff:
        raise StudyError(
            f"{run.path} holds a run of another config ({'; '.join(diff)}); use another --out or move it away"
        )


def launch(command: Sequence[str], log: pathlib.Path) -> int:
    """Run ``command`` with its stdout and stderr appended to ``log``; its exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {shlex.join(command)}\n")
        f.flush()
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False).returncode


def read_results(run: RunDir) -> dict[str, dict]:
    """A finished run's evaluation: direction -> ``{"mean": row, "chance": row, ...}`` (percent)."""
    return json.loads(run.results_path.read_text())["results"]


def scores(results: Mapping[str, Mapping]) -> str:
    """``direction rank-1 R mAP M`` of each direction of a run's results."""
    return "; ".join(
        f"{direction} rank-1 {r['mean']['rank1']:.2f} mAP {r['mean']['mAP']:.2f}" for direction, r in results.items()
    )


def train_runs(runs: Sequence[Run], base: pathlib.Path, cache_dir: str) -> None:
    """Train every run not finished yet, in order, one progress line each.

    Raises:
        RunFailed: a run exited with an error or wrote no ``results.json``.
    """
    started = time.monotonic()
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] {run.variant} seed {run.seed}:"
        if run.dir.finished:
            print(f"{prefix} finished, skipped; {scores(read_results(run.dir))}", flush=True)
            continue
        print(f"{prefix} {'resuming' if run.dir.has_checkpoint else 'training'} ...", end="", flush=True)
        t = time.monotonic()
        status = launch(run.command(base, cache_dir), run.log)
        if status != 0 or not run.dir.finished:
            print(" failed", flush=True)
            why = f"exit status {status}" if status else "no results.json written"
            raise RunFailed(f"run {run.variant} seed {run.seed} failed ({why}: {_last_line(run.log)}); see {run.log}")
        now = time.monotonic()
        print(
            f" done in {_duration(now - t)} ({_duration(now - started)} in all); {scores(read_results(run.dir))}",
            flush=True,
        )


def _last_line(log: pathlib.Path) -> str:
    """The last non-empty line of a log (a failed trainer's error), or a note that it is empty."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "the log is empty"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"


def seed_statistics(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean of ``values`` and their sample standard deviation (ddof=1; None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(results: Mapping[str, Mapping[int, Mapping[str, Mapping]]]) -> dict[str, dict[str, dict]]:
    """Per direction and variant, each metric's statistics over the seeds.

    Args:
        results: variant -> seed -> that run's results (``results.json``'s ``"results"``:
            direction -> ``{"mean": row, "chance": row}``, rows of percent by metric).

    Returns:
        direction -> variant -> ``{"n", "seeds", "mean": {metric: float}, "std": {metric: float
        or None}, "chance": {metric: float}}``, metrics in the order of
        :data:`~lba_tf.evaluation.results.COLUMNS`, those every seed has; the chance level is
        the mean of the runs' (one value when they share the test set).
    """
    summary: dict[str, dict[str, dict]] = {}
    for variant, by_seed in results.items():
        directions = dict.fromkeys(d for seed_results in by_seed.values() for d in seed_results)
        for direction in directions:
            seeds = [seed for seed, r in by_seed.items() if direction in r]
            means = [by_seed[seed][direction]["mean"] for seed in seeds]
            chances = [by_seed[seed][direction]["chance"] for seed in seeds]
            stats = {c: seed_statistics([row[c] for row in means]) for c in COLUMNS if all(c in r for r in means)}
            summary.setdefault(direction, {})[variant] = {
                "n": len(seeds),
                "seeds": seeds,
                "mean": {c: mean for c, (mean, _) in stats.items()},
                "std": {c: std for c, (_, std) in stats.items()},
                "chance": {c: statistics.fmean(r[c] for r in chances) for c in COLUMNS if all(c in r for r in chances)},
            }
    return summary


def _metric_name(column: str) -> str:
    return column.replace("rank", "rank-")


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {'-' if std is None else f'{std:.2f}'}"


def study_markdown(report: Mapping[str, Any]) -> str:
    """``study.md``: a table per direction (rows the variants, cells ``mean ± std`` over seeds, and
    the chance level), the seeds and the study file.

    Args:
        report: the content of ``study.json`` (:func:`study_report`).
    """
    lines = [
        f"# Study {pathlib.Path(report['study']).stem}",
        "",
        f"Study file `{report['study']}` on `{report['base']}`, seeds {', '.join(map(str, report['seeds']))}. "
        "Each cell is the mean over seeds ± their sample standard deviation (ddof=1; - for one seed), "
        "in percent; n is the number of seeds.",
    ]
    for direction, by_variant in report["directions"].items():
        columns = [c for c in COLUMNS if any(c in v["mean"] for v in by_variant.values())]
        lines += ["", f"## {direction}", ""]
        lines.append("| variant | n | " + " | ".join(_metric_name(c) for c in columns) + " |")
        lines.append("|---|---|" + "---|" * len(columns))
        for variant, v in by_variant.items():
            cells = [_cell(v["mean"].get(c), v["std"].get(c)) for c in columns]
            lines.append(f"| {variant} | {v['n']} | " + " | ".join(cells) + " |")
        chances = {variant: v["chance"] for variant, v in by_variant.items()}
        shared = len({json.dumps(c, sort_keys=True) for c in chances.values()}) == 1
        for variant, chance in list(chances.items())[:1] if shared else chances.items():
            label = "chance" if shared else f"chance ({variant})"
            cells = [f"{chance[c]:.2f}" if c in chance else "n/a" for c in columns]
            lines.append(f"| {label} | | " + " | ".join(cells) + " |")
    lines += ["", f"Every run: {', '.join(report['set']) or 'the base config'}; then each variant's:", ""]
    lines += [f"- {name}: {', '.join(sets) or 'nothing more'}" for name, sets in report["variants"].items()]
    if report["command_line"]:
        lines += ["", f"Then, from the command line: {', '.join(report['command_line'])}."]
    missing = [f"{variant} seed {seed}" for variant, seeds in report["not_finished"].items() for seed in seeds]
    if missing:
        lines += ["", f"Not finished, left out: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def study_report(study: Study, runs: Sequence[Run]) -> dict[str, Any]:
    """``study.json``: the study, its statistics (:func:`summarise`) from its finished runs, and
    the runs not finished."""
    results: dict[str, dict[int, dict]] = {}
    not_finished: dict[str, list[int]] = {}
    for run in runs:
        if run.dir.finished:
            results.setdefault(run.variant, {})[run.seed] = read_results(run.dir)
        else:
            not_finished.setdefault(run.variant, []).append(run.seed)
    return {
        "study": str(study.path),
        "base": str(study.base),
        "seeds": list(study.seeds),
        "set": list(study.shared),
        "command_line": list(study.command_line),
        "variants": {name: list(sets) for name, sets in study.variants.items()},
        "directions": summarise(results),
        "not_finished": not_finished,
    }


def write_report(report: Mapping[str, Any], out: pathlib.Path) -> str:
    """Write ``<out>/study.json`` and ``<out>/study.md``; the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = study_markdown(report)
    (out / "study.md").write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study_file", help="the study (YAML: base, seeds, set, variants)")
    parser.add_argument("--seeds", metavar="0,1,2", default=None, help="the seeds, instead of the file's")
    parser.add_argument("--only", metavar="NAME,NAME", default=None, help="train and tabulate these variants only")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config value of every run, after the file's (repeatable)",
    )
    parser.add_argument("--out", metavar="DIR", default=None, help="default: runs/studies/<study file name>")
    parser.add_argument(
        "--cache-dir", default=".cache", metavar="DIR", help="where train generates the synthetic dataset (.cache)"
    )
    parser.add_argument("--table-only", action="store_true", help="tabulate the finished runs, train nothing")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out or pathlib.Path("runs", "studies", pathlib.Path(args.study_file).stem))
    try:
        study = read_study(args.study_file).narrowed(
            parse_seeds(args.seeds, f"--seeds {args.seeds}") if args.seeds is not None else None,
            args.only.split(",") if args.only is not None else None,
            args.overrides,
        )
        runs = plan(study, out, training=not args.table_only)
        if args.table_only and not any(run.dir.finished for run in runs):
            raise StudyError(f"no finished run of {study.path} under {out}: nothing to tabulate")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.table_only:
        print(f"study {study.path}: {len(runs)} runs under {out} (each logs to <run>/train.log)", flush=True)
        try:
            train_runs(runs, study.base, args.cache_dir)
        except RunFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print()
    print(write_report(study_report(study, runs), out), end="")
    print(f"\nwritten: {out / 'study.md'}, {out / 'study.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
