"""python -m lba_tf.study: what it refuses before any work, the statistics over seeds, which runs it
launches and skips, and (slow) a small study trained, rerun and tabulated."""

import json
import math
import sys

import pytest
import yaml

from lba_tf.config import CONFIG_DIR, load_config
from lba_tf.run_dir import RunDir
from lba_tf.study import launch, main, plan, read_study
from tests.tiny import TINY_OVERRIDES

REPO = CONFIG_DIR.parent
BASE = REPO / "configs" / "synthetic.yaml"
ABLATION = REPO / "configs" / "studies" / "ablation.yaml"
IR_TO_VIS, VIS_TO_IR = "infrared_to_visible", "visible_to_infrared"


def _study_file(tmp_path, name="study.yaml", **tree):
    """A study file in ``tmp_path``: two variants and two seeds of the synthetic config unless ``tree`` says."""
    tree = {"base": "configs/synthetic.yaml", "seeds": [0, 1], "variants": {"a": [], "b": ["train.lr=0.05"]}, **tree}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def _no_launch(command, log):
    raise AssertionError(f"launched {command}")


def _one_line(capsys):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def _row(rank1, mAP, filler=50.0):
    return {"rank1": rank1, "rank5": filler, "rank10": filler, "rank20": filler, "mAP": mAP, "mINP": filler}


def _finish(study, out, variant, seed, results):
    """A finished run directory as training leaves it: the run's resolved config and its results.json."""
    run = RunDir(out / variant / f"seed{seed}")
    run.write_config(load_config(study.base, study.overrides(variant, seed)))
    run.write_results({"step": 4, "results": results})
    return run


@pytest.mark.parametrize(
    "tree, argv, message",
    [
        ({"seed": [0]}, [], "{study}: unknown key 'seed'; did you mean 'seeds'?"),
        (
            {"base": "configs/nope.yaml"},
            [],
            "{study}: base: configs/nope.yaml: config file not found (looked in {tmp} and {repo})",
        ),
        ({"seeds": [0, "x"]}, [], "{study}: seeds: 'x' is not a seed (a non-negative integer)"),
        ({"seeds": [0, 0]}, [], "{study}: seeds: seed 0 is listed twice"),
        ({}, ["--seeds", "0,1.5"], "--seeds 0,1.5: '1.5' is not a seed (a non-negative integer)"),
        ({}, ["--only", "a,c"], "--only a,c: no variant 'c' in {study} (its variants: a, b)"),
        (
            {"variants": {"a": {"train.lr": 0.05}}},
            [],
            "{study}: variants.a: expected a list of KEY=VALUE strings, got {{'train.lr': 0.05}}",
        ),
        (
            {"variants": {"a/b": []}},
            [],
            "{study}: variants: 'a/b' is not a folder name (letters, digits, '_', '.', '-')",
        ),
        ({"set": ["train.lr"]}, [], "{study}: set: --set train.lr: expected KEY=VALUE, e.g. train.lr=0.05"),
        (
            {},
            ["--set", "train.seed=3"],
            "--set train.seed=3: train.seed is set by the study's seeds (or --seeds), not an override",
        ),
        (
            {"variants": {"a": [], "ic_only": ["loss.dense_triplet_wieght=0.0"]}},
            [],
            "variant 'ic_only': --set loss.dense_triplet_wieght=0.0: unknown key 'loss.dense_triplet_wieght'; "
            "did you mean 'loss.dense_triplet_weight'?",
        ),
        (
            {"variants": {"a": ["data.num_instances=8"]}},
            [],
            "variant 'a': data.num_identities=8 with data.num_instances=8: model.method=full pairs each image with "
            "images of 8 distinct other identities of its batch, so it needs data.num_identities - 1 >= "
            "data.num_instances; set data.num_identities to at least 9, data.num_instances to at most 7, or "
            "model.method=baseline",
        ),
    ],
)
def test_a_bad_study_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch, tree, argv, message):
    monkeypatch.setattr("lba_tf.study.launch", _no_launch)
    study = _study_file(tmp_path, **tree)
    assert main([str(study), "--out", str(tmp_path / "out"), *argv]) == 2
    assert _one_line(capsys) == "error: " + message.format(study=study, tmp=tmp_path, repo=REPO)
    assert not (tmp_path / "out").exists()


def test_a_missing_study_file_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "absent.yaml")]) == 2
    assert _one_line(capsys) == f"error: {tmp_path / 'absent.yaml'}: study file not found"


def test_the_base_config_is_found_beside_the_study_file_first(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: " + str(BASE) + "\ntrain:\n  epochs: 1\n")
    study = read_study(_study_file(tmp_path, base="mine.yaml"))
    assert study.base == tmp_path / "mine.yaml"
    assert read_study(_study_file(tmp_path)).base == BASE


def test_a_run_directory_holding_another_config_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lba_tf.study.launch", _no_launch)
    path = _study_file(tmp_path)
    other = read_study(_study_file(tmp_path, "other.yaml", variants={"a": [], "b": ["train.lr=0.5"]}))
    _finish(other, tmp_path / "out", "b", 1, {})
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert _one_line(capsys) == (
        f"error: {tmp_path / 'out' / 'b' / 'seed1'} holds a run of another config (train.lr: 0.5 -> 0.05); "
        "use another --out or move it away"
    )
    assert not (tmp_path / "out" / "a").exists()


def test_the_ablation_study_is_the_papers_four_variants(tmp_path):
    study = read_study(ABLATION)
    assert study.base == BASE and study.seeds == (0, 1, 2) and study.shared == ()
    runs = plan(study, tmp_path)  # checked as training checks them
    settings = {}
    for run in runs:
        config = load_config(study.base, run.overrides)
        assert config.train.seed == run.seed
        assert run.dir.path == tmp_path / run.variant / f"seed{run.seed}"
        loss = config.loss
        settings[run.variant] = (config.model.method, loss.id_consistency_weight, loss.dense_triplet_weight)
    assert settings == {
        "baseline": ("baseline", 1.0, 0.5),
        "ic_only": ("full", 1.0, 0.0),
        "dt_only": ("full", 0.0, 0.5),
        "full": ("full", 1.0, 0.5),
    }
    assert len(runs) == 12


def test_table_of_mean_and_sample_std_over_seeds_from_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lba_tf.study.launch", _no_launch)
    path = _study_file(tmp_path, seeds=[0, 1, 2])
    study, out = read_study(path), tmp_path / "out"
    chance = _row(2.0, 3.0, filler=10.0)
    for seed, (rank1, mAP) in enumerate([(10.0, 5.0), (20.0, 5.0), (60.0, 8.0)]):
        results = {
            IR_TO_VIS: {"mean": _row(rank1, mAP), "chance": chance},
            VIS_TO_IR: {"mean": _row(rank1 + 1, mAP), "chance": chance},
        }
        _finish(study, out, "a", seed, results)
    _finish(study, out, "b", 0, {IR_TO_VIS: {"mean": _row(40.0, 30.0), "chance": chance}})
    (out / "b" / "seed1").mkdir()  # started, never finished

    assert main([str(path), "--out", str(out), "--table-only"]) == 0
    report = json.loads((out / "study.json").read_text())
    a, b = report["directions"][IR_TO_VIS]["a"], report["directions"][IR_TO_VIS]["b"]
    # mean 30, deviations -20, -10, 30: sum of squares 1400 over n - 1 = 2
    assert (a["n"], a["seeds"], a["mean"]["rank1"], a["std"]["rank1"]) == (3, [0, 1, 2], 30.0, math.sqrt(700.0))
    # mean 6, deviations -1, -1, 2: 6 / 2
    assert (a["mean"]["mAP"], a["std"]["mAP"]) == (6.0, pytest.approx(math.sqrt(3.0)))
    assert (a["mean"]["mINP"], a["std"]["mINP"]) == (50.0, 0.0)
    assert a["chance"] == chance
    assert report["directions"][VIS_TO_IR]["a"]["mean"]["rank1"] == 31.0
    assert list(report["directions"][VIS_TO_IR]) == ["a"]  # b has no such direction
    assert (b["n"], b["mean"]["rank1"], b["std"]["rank1"]) == (1, 40.0, None)
    assert report["not_finished"] == {"b": [1, 2]}
    assert report["seeds"] == [0, 1, 2] and report["variants"] == {"a": [], "b": ["train.lr=0.05"]}

    markdown = (out / "study.md").read_text()
    assert f"## {IR_TO_VIS}\n\n| variant | n | rank-1 | rank-5 | rank-10 | rank-20 | mAP | mINP |\n" in markdown
    assert (
        "| a | 3 | 30.00 ± 26.46 | 50.00 ± 0.00 | 50.00 ± 0.00 | 50.00 ± 0.00 | 6.00 ± 1.73 | 50.00 ± 0.00 |"
    ) in markdown
    assert "| b | 1 | 40.00 ± - | 50.00 ± - | 50.00 ± - | 50.00 ± - | 30.00 ± - | 50.00 ± - |" in markdown
    assert "| chance | | 2.00 | 10.00 | 10.00 | 10.00 | 3.00 | 10.00 |" in markdown
    assert f"Study file `{path}` on `{BASE}`, seeds 0, 1, 2." in markdown
    assert "Not finished, left out: b seed 1, b seed 2." in markdown
    assert markdown in capsys.readouterr().out


def test_table_only_without_a_finished_run_is_one_line(tmp_path, capsys):
    path = _study_file(tmp_path)
    assert main([str(path), "--out", str(tmp_path / "out"), "--table-only"]) == 2
    assert _one_line(capsys) == f"error: no finished run of {path} under {tmp_path / 'out'}: nothing to tabulate"


def test_a_finished_run_is_skipped_and_an_unfinished_one_trained_by_the_train_command(tmp_path, capsys, monkeypatch):
    path = _study_file(tmp_path, set=["train.epochs=1"], variants={"a": ["model.method=baseline"]})
    study, out = read_study(path).narrowed(None, None, ["train.lr=0.5"]), tmp_path / "out"
    results = {IR_TO_VIS: {"mean": _row(12.5, 25.0), "chance": _row(1.0, 2.0)}}
    _finish(study, out, "a", 0, results)
    launched = []

    def fake_launch(command, log):
        launched.append((command, log))
        RunDir(out / "a" / "seed1").write_results({"results": results})
        return 0

    monkeypatch.setattr("lba_tf.study.launch", fake_launch)
    assert main([str(path), "--out", str(out), "--set", "train.lr=0.5", "--cache-dir", str(tmp_path / "c")]) == 0
    run = out / "a" / "seed1"
    assert launched == [
        (
            [sys.executable, "-m", "lba_tf.train", "--config", str(BASE), "--run-dir", str(run)]
            + ["--cache-dir", str(tmp_path / "c"), "--set", "train.seed=1", "--set", "train.epochs=1"]
            + ["--set", "model.method=baseline", "--set", "train.lr=0.5"],
            run / "train.log",
        )
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"[1/2] a seed 0: finished, skipped; {IR_TO_VIS} rank-1 12.50 mAP 25.00"
    assert lines[2].startswith("[2/2] a seed 1: training ... done in ")
    assert lines[2].endswith(f"; {IR_TO_VIS} rank-1 12.50 mAP 25.00")
    assert json.loads((out / "study.json").read_text())["directions"][IR_TO_VIS]["a"]["n"] == 2


def test_a_failing_run_stops_the_study_naming_it_and_its_log(tmp_path, capsys, monkeypatch):
    launched = []

    def failing_launch(command, log):
        launched.append(command)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("some output\nerror: no usable checkpoint\n\n")
        return 2

    monkeypatch.setattr("lba_tf.study.launch", failing_launch)
    out = tmp_path / "out"
    assert main([str(_study_file(tmp_path)), "--out", str(out)]) == 1
    log = out / "a" / "seed0" / "train.log"
    assert _one_line(capsys) == (f"error: run a seed 0 failed (exit status 2: error: no usable checkpoint); see {log}")
    assert len(launched) == 1 and not (out / "study.json").exists()


def test_launch_appends_the_command_and_its_output_to_the_log(tmp_path):
    log = tmp_path / "run" / "train.log"
    command = [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]
    assert launch(command, log) == 3
    assert launch(command, log) == 3
    text = log.read_text()
    assert text.count(f"{sys.executable} -c ") == 2
    assert text.count("out\n") == 2 and text.count("err\n") == 2


@pytest.mark.slow
def test_a_small_study_trains_each_run_once_and_tabulates_them(tmp_path, capsys, monkeypatch):
    fast = [*TINY_OVERRIDES, "train.epochs=1", "data.eval_trials=1"]
    variants = {"baseline": ["model.method=baseline"], "full": ["model.method=full"]}
    path = _study_file(tmp_path, set=fast, variants=variants)
    out = tmp_path / "out"
    argv = [str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert capsys.readouterr().out.count(" training ... done in ") == 4
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/results.json")}
    assert len(finished) == 4

    monkeypatch.setattr("lba_tf.study.launch", _no_launch)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/results.json")} == finished

    report = json.loads((out / "study.json").read_text())
    markdown = (out / "study.md").read_text()
    assert list(report["directions"]) == [IR_TO_VIS] and markdown in printed
    for variant, (override,) in variants.items():
        method = override.partition("=")[2]
        runs = [RunDir(out / variant / f"seed{seed}") for seed in (0, 1)]
        assert [(r.read_config().train.seed, r.read_config().model.method) for r in runs] == [(0, method), (1, method)]
        x, y = (json.loads(r.results_path.read_text())["results"][IR_TO_VIS]["mean"]["rank1"] for r in runs)
        stats = report["directions"][IR_TO_VIS][variant]
        assert (stats["n"], stats["seeds"]) == (2, [0, 1])
        assert stats["mean"]["rank1"] == pytest.approx((x + y) / 2)
        assert stats["std"]["rank1"] == pytest.approx(abs(x - y) / math.sqrt(2))
        assert f"| {variant} | 2 | {(x + y) / 2:.2f} ± {abs(x - y) / math.sqrt(2):.2f} |" in markdown
