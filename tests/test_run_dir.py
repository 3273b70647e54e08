"""The run directory: new, resumed or refused for training; what it holds, read back."""

import json
import logging

import numpy as np
import pytest
import yaml

from lba_tf.config import load_config
from lba_tf.log import logger
from lba_tf.models.lba import build_model
from lba_tf.run_dir import RunDir, RunDirError, main
from tests.tiny import TINY_OVERRIDES


def test_new_run_gets_a_timestamped_directory_with_the_resolved_config(tmp_path):
    cfg = load_config(None, ["train.lr=0.05"])
    run = RunDir.for_training(cfg, None, runs_root=str(tmp_path))
    assert run.path.parent == tmp_path / "synthetic"
    assert yaml.safe_load(run.config_path.read_text())["train"]["lr"] == 0.05
    assert run.read_config().train.lr == 0.05


def test_unfinished_run_of_the_same_config_is_resumed(tmp_path):
    cfg = load_config(None)
    first = RunDir.for_training(cfg, None, runs_root=str(tmp_path))
    assert RunDir.for_training(cfg, None, runs_root=str(tmp_path)).path == first.path
    fresh = RunDir.for_training(cfg, None, runs_root=str(tmp_path), fresh=True)
    assert fresh.path != first.path and fresh.path.parent == first.path.parent


def test_finished_or_different_runs_are_not_resumed(tmp_path):
    cfg = load_config(None)
    first = RunDir.for_training(cfg, None, runs_root=str(tmp_path))
    first.write_results({})
    assert first.finished
    other = load_config(None, ["train.lr=0.5"])
    (tmp_path / "synthetic" / "zzz").mkdir()
    (tmp_path / "synthetic" / "zzz" / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
    again = RunDir.for_training(cfg, None, runs_root=str(tmp_path))
    assert again.path not in (first.path, tmp_path / "synthetic" / "zzz")


def _checkpoint(run, step=3):
    """The index file a checkpoint save leaves (what tells a run that trained from one that did not)."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    (run.checkpoints / f"ckpt-{step}.index").write_bytes(b"")


def test_explicit_run_dir_with_checkpoints_of_another_config_is_refused(tmp_path):
    run = RunDir.for_training(load_config(None), str(tmp_path / "run"))
    _checkpoint(run)
    with pytest.raises(RunDirError, match=r"another config \(train.lr: 0.1 -> 0.5\)"):
        RunDir.for_training(load_config(None, ["train.lr=0.5"]), str(tmp_path / "run"))
    assert run.read_config().train.lr == 0.1


def test_explicit_run_dir_without_checkpoints_takes_the_new_config_and_says_so(tmp_path, caplog):
    run = RunDir.for_training(load_config(None), str(tmp_path / "run"))
    (run.checkpoints).mkdir()
    (run.checkpoints / "checkpoint").write_text("")  # no ckpt-*.index: nothing was saved
    assert not run.has_checkpoint
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="lba_tf"):
            again = RunDir.for_training(load_config(None, ["train.lr=0.5", "train.seed=3"]), str(tmp_path / "run"))
    finally:
        logger.removeHandler(caplog.handler)
    assert again.path == run.path and again.read_config().train.lr == 0.5
    # a set: the record reaches caplog twice while the package logger still propagates
    assert {(r.levelname, r.getMessage()) for r in caplog.records} == {
        (
            "WARNING",
            f"{run.path} held the config of a run that saved no checkpoint; it now holds this one "
            "(train.lr: 0.1 -> 0.5; train.seed: 0 -> 3)",
        )
    }


def test_the_same_config_resumes_an_explicit_run_dir_silently(tmp_path, caplog):
    run = RunDir.for_training(load_config(None), str(tmp_path / "run"))
    _checkpoint(run)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="lba_tf"):
            assert RunDir.for_training(load_config(None), str(tmp_path / "run")).has_checkpoint
    finally:
        logger.removeHandler(caplog.handler)
    assert caplog.records == []


def test_resuming_prefers_a_run_that_saved_checkpoints_to_newer_ones_that_did_not(tmp_path):
    cfg = load_config(None)
    base = tmp_path / "synthetic"
    trained, failed = RunDir(base / "20260101-000000"), RunDir(base / "20260102-000000")
    for run in (trained, failed):
        run.write_config(cfg)
    assert RunDir.for_training(cfg, None, runs_root=str(tmp_path)).path == failed.path  # neither trained: newest
    _checkpoint(trained)
    assert RunDir.for_training(cfg, None, runs_root=str(tmp_path)).path == trained.path
    _checkpoint(failed, step=1)
    assert RunDir.for_training(cfg, None, runs_root=str(tmp_path)).path == failed.path
    assert sorted(p.name for p in base.iterdir()) == [trained.path.name, failed.path.name]


def test_info_best_and_results_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_best() is None and not run.finished and not RunDir.is_run(run.path)
    run.write_info(num_classes=7, steps_per_epoch=3, image_height=32, image_width=16)
    assert run.num_classes == 7 and run.info()["steps_per_epoch"] == 3
    run.write_best(12.5, 40)
    assert run.read_best() == {"score": 12.5, "step": 40, "chosen_on": "the test set"}
    run.write_results({"step": 40})
    assert run.finished and json.loads(run.results_path.read_text()) == {"step": 40}
    assert not list(run.path.glob("*.tmp"))  # written through a temporary file, then renamed


def test_what_is_missing_is_named(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="no config.yaml"):
        run.read_config()
    with pytest.raises(RunDirError, match="no run.json"):
        _ = run.num_classes
    with pytest.raises(RunDirError, match="has no weights/best.weights.h5"):
        run.existing_weights("best")
    with pytest.raises(ValueError, match="'last' or 'best'"):
        run.weights("first")


def test_a_run_rebuilds_its_model_from_config_and_run_json(tmp_path):
    config = load_config(None, TINY_OVERRIDES)
    run = RunDir.for_training(config, str(tmp_path / "run"))
    run.write_info(num_classes=6, steps_per_epoch=2, image_height=32, image_width=16)
    model = build_model(config, 6)
    run.weights("last").parent.mkdir(parents=True)
    model.save_weights(run.weights("last"))
    rebuilt = run.load_model("last")
    assert rebuilt.num_classes == 6
    for a, b in zip(model.weights, rebuilt.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_newest_finished_run_is_printed_for_the_makefile(tmp_path, capsys):
    cfg = load_config(None)
    assert main(["newest", "--runs-root", str(tmp_path)]) == 2
    assert "no finished run under" in capsys.readouterr().err
    older = RunDir(tmp_path / "synthetic" / "20260101-000000")
    older.write_config(cfg)
    older.write_results({})
    newer = RunDir(tmp_path / "synthetic" / "20260102-000000")
    newer.write_config(cfg)  # unfinished: not exported
    assert main(["newest", "--runs-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(older.path)


def test_a_run_written_before_a_setting_existed_reads_with_the_value_it_ran_with(tmp_path):
    run = RunDir(tmp_path / "old")
    run.write_config(load_config(None))
    tree = yaml.safe_load(run.config_path.read_text())
    del tree["train"]["deterministic"]  # as runs were written before train.deterministic
    run.config_path.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert run.read_config().train.deterministic is False
    assert run.read_config(["train.deterministic=true"]).train.deterministic is True
    new = RunDir(tmp_path / "new")
    new.write_config(load_config(None))
    assert new.read_config().train.deterministic is True
