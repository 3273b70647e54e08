"""python -m lba_tf.train: what it refuses, in one line with exit status 2, and when."""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from lba_tf.config import load_config
from lba_tf.log import logger
from lba_tf.run_dir import RunDir
from lba_tf.train import main
from tests.data.layouts import small_llcm, small_sysu, write_regdb
from tests.tiny import TINY_OVERRIDES, set_args

REPO = pathlib.Path(__file__).resolve().parents[2]


def _checkpoint(run):
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    (run.checkpoints / "ckpt-1.index").write_bytes(b"")


@pytest.fixture(autouse=True)
def logs_to_caplog(monkeypatch):
    """The program's logs reach caplog, not a handler bound to an earlier test's stderr, so
    stderr holds exactly what the program prints."""
    monkeypatch.setattr("lba_tf.train.setup_logging", lambda verbose: None)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_run_dir_with_checkpoints_of_another_config_is_one_line_before_any_work(tmp_path, capsys):
    _checkpoint(RunDir.for_training(load_config(None), str(tmp_path / "run")))
    assert main(["--run-dir", str(tmp_path / "run"), "--set", "train.lr=0.5"]) == 2
    assert _one_line(capsys) == (
        f"error: {tmp_path / 'run'} holds a run with another config (train.lr: 0.1 -> 0.5); use another --run-dir"
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints", "config.yaml"]


def test_bad_override_fails_before_any_work(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path / "never"), "--set", "train.lrr=0.1"]) == 2
    assert "unknown key 'train.lrr'; did you mean 'train.lr'?" in _one_line(capsys)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm"])
def test_dataset_config_without_imagenet_weights_stops_before_any_work(tmp_path, capsys, name):
    code = main(
        [
            "--config",
            f"configs/{name}.yaml",
            "--run-dir",
            str(tmp_path / "never"),
            "--set",
            f"data.root={tmp_path / 'absent'}",
        ]
    )
    err = _one_line(capsys)
    assert code == 2
    assert err.startswith("error: model.pretrained is not set")
    assert "python -m lba_tf.tools.import_torch resnet50.pth weights/resnet50_imagenet.weights.h5" in err
    assert "--set model.pretrained=random" in err
    assert not (tmp_path / "never").exists()


def test_missing_pretrained_file_stops_before_any_work(tmp_path, capsys):
    code = main(["--run-dir", str(tmp_path / "never"), "--set", f"model.pretrained={tmp_path / 'w.weights.h5'}"])
    assert code == 2 and _one_line(capsys) == (
        f"error: model.pretrained: {tmp_path / 'w.weights.h5'}: file not found (make it with "
        "`python -m lba_tf.tools.import_torch resnet18.pth weights/resnet18_imagenet.weights.h5 --config "
        "<this config>`, or pass --set model.pretrained=random)"
    )
    assert not (tmp_path / "never").exists()


_MAIN_IN_A_FRESH_INTERPRETER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from lba_tf.train import main

    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            results.append([main(argv), err.getvalue()])
    print(json.dumps({"results": results, "tensorflow": "tensorflow" in sys.modules}))
    """
)


def test_config_layout_and_listing_errors_are_one_line_before_tensorflow_loads(tmp_path):
    sysu, regdb = small_sysu(tmp_path / "sysu"), write_regdb(tmp_path / "regdb", range(1, 9), 1, (1,))
    llcm = small_llcm(tmp_path / "llcm")
    lines = (llcm / "idx" / "train_nir.txt").read_text().splitlines()
    (llcm / "idx" / "train_nir.txt").write_text("\n".join(x for x in lines if "/0008/" not in x) + "\n")
    noir = pathlib.Path(shutil.copytree(sysu, tmp_path / "sysu-noir"))
    shutil.rmtree(noir / "cam3" / "0007")
    shutil.rmtree(noir / "cam6" / "0007")
    regdb_config = ["--config", "configs/regdb.yaml", "--set", "model.pretrained=random"]
    cases = {
        "error: --set data.num_instances=0: data.num_instances: 0 is out of range, expected a value in [1, inf)": [
            "--set",
            "data.num_instances=0",
        ],
        "error: data.num_identities=3 with data.num_instances=3: model.method=full pairs each image with images "
        "of 3 distinct other identities of its batch, so it needs data.num_identities - 1 >= data.num_instances; "
        "set data.num_identities to at least 4, data.num_instances to at most 2, or model.method=baseline": set_args(
            ["data.num_identities=3", "data.num_instances=3"]
        ),
        "error: data.num_identities=201 identities per batch, but the synthetic training set "
        "(data.synthetic.num_train_ids=200) has only 200: set data.num_identities to at most 200 or "
        "data.synthetic.num_train_ids to at least 201": set_args(["data.num_identities=201"]),
        f"error: data.num_identities=5 identities per batch, but the training set of {regdb} has only 4: "
        "set data.num_identities to at most 4": [
            *regdb_config,
            *set_args([f"data.root={regdb}", "data.num_identities=5", "data.num_instances=2"]),
        ],
        f"error: data.root: {tmp_path / 'absent'}: folder not found; set it to the sysu dataset folder "
        "(e.g. --set data.root=/path/to/sysu)": set_args(["data.dataset=sysu", f"data.root={tmp_path / 'absent'}"]),
        "error: data.root is null: set it to the regdb dataset folder (e.g. --set data.root=/path/to/regdb)": [
            *regdb_config,
            *set_args(["data.root=null"]),
        ],
        f"error: {noir}: no infrared image for training identity 7; a batch draws K visible and K infrared "
        "images of each of its identities: add the missing images or leave those identities out of training": set_args(
            ["data.dataset=sysu", f"data.root={noir}", "data.num_identities=3", "data.num_instances=2"]
        ),
        f"error: {llcm / 'idx' / 'train_vis.txt'} and {llcm / 'idx' / 'train_nir.txt'}: no infrared image for "
        "training identity 8; a batch draws K visible and K infrared images of each of its identities: add the "
        "missing images or leave those identities out of training": [
            "--config",
            "configs/llcm.yaml",
            *set_args(["model.pretrained=random", f"data.root={llcm}"]),
        ],
    }
    argvs = [[*argv, "--run-dir", str(tmp_path / f"never-{i}")] for i, argv in enumerate(cases.values())]
    out = subprocess.run(
        [sys.executable, "-c", _MAIN_IN_A_FRESH_INTERPRETER, json.dumps(argvs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    report = json.loads(out.stdout)
    assert [err.strip() for _, err in report["results"]] == list(cases)
    assert [code for code, _ in report["results"]] == [2] * len(cases)
    assert report["tensorflow"] is False
    assert not list(tmp_path.glob("never-*"))


def test_the_command_itself_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lba_tf.train", "--set", "data.num_instances=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "error: --set data.num_instances=0: data.num_instances: 0 is out of range, expected a value in [1, inf)\n",
    )
    assert list(tmp_path.iterdir()) == []


def _broken_infrared_tree(tmp_path):
    """small_sysu with every infrared image of training identity 5 undecodable."""
    root = small_sysu(tmp_path / "sysu")
    for image in sorted([*root.glob("cam3/0005/*.jpg"), *root.glob("cam6/0005/*.jpg")]):
        image.write_bytes(b"not an image")
    return root


def test_failed_start_on_undecodable_images_then_the_corrected_rerun_in_the_same_run_dir(tmp_path, capsys, caplog):
    root = _broken_infrared_tree(tmp_path)
    run_dir = tmp_path / "run"
    argv = ["--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir)]
    argv += set_args([*TINY_OVERRIDES, "data.dataset=sysu", f"data.root={root}"])
    assert main(argv) == 2
    assert _one_line(capsys) == (
        f"error: {root}/cam3/0005/0001.jpg: cannot decode the image (and 3 more: {root}/cam3/0005/0002.jpg, "
        f"{root}/cam6/0005/0001.jpg, {root}/cam6/0005/0002.jpg); replace or remove it, or set "
        "data.skip_corrupt=true to train and evaluate without undecodable images"
    )
    assert not RunDir(run_dir).has_checkpoint
    # skipping them leaves identity 5 without infrared images: the rerun is let in, and says so
    caplog.set_level(logging.INFO, logger="lba_tf")
    assert main([*argv, "--set", "data.skip_corrupt=true"]) == 2
    assert _one_line(capsys) == (
        "error: no infrared image among the training records for identity 5 (label 2); every identity of a "
        "batch needs K images of each modality: add infrared images or leave it out of the training set"
    )
    assert (
        "lba_tf",
        logging.WARNING,
        f"{run_dir} held the config of a run that saved no checkpoint; it now holds this one "
        "(data.skip_corrupt: False -> True)",
    ) in caplog.record_tuples
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["skip_corrupt"] is True


def test_without_run_dir_a_failed_start_is_not_resumed_by_another_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _broken_infrared_tree(tmp_path)
    argv = ["--cache-dir", str(tmp_path / "cache"), *set_args([*TINY_OVERRIDES, "data.dataset=sysu"])]
    assert main([*argv, "--set", "data.num_identities=5", "--set", f"data.root={root}"]) == 2
    assert not (tmp_path / "runs").exists()  # refused from the listing: nothing written
    assert main([*argv, "--set", f"data.root={root}"]) == 2
    (failed,) = (tmp_path / "runs" / "synthetic").iterdir()
    assert main([*argv, "--set", f"data.root={root}", "--set", "data.skip_corrupt=true"]) == 2
    capsys.readouterr()
    runs = sorted((tmp_path / "runs" / "synthetic").iterdir())
    assert len(runs) == 2 and failed in runs
    assert yaml.safe_load((failed / "config.yaml").read_text())["data"]["skip_corrupt"] is False
    # the same config again reuses its own directory, which saved nothing
    assert main([*argv, "--set", f"data.root={root}"]) == 2
    assert sorted((tmp_path / "runs" / "synthetic").iterdir()) == runs


def test_a_damaged_newest_checkpoint_is_skipped_and_none_usable_is_one_line(tmp_path, capsys, caplog):
    run_dir = tmp_path / "run"
    argv = ["--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir), *set_args(TINY_OVERRIDES)]
    assert main([*argv, "--max-steps", "2"]) == 0
    checkpoints = run_dir / "checkpoints"
    data = checkpoints / "ckpt-2.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # as a full disk leaves it
    caplog.set_level(logging.INFO, logger="lba_tf")
    assert main([*argv, "--max-steps", "3"]) == 0
    assert any(
        level == logging.WARNING and "skipped damaged checkpoint" in text and "ckpt-2 (" in text
        for _, level, text in caplog.record_tuples
    ), caplog.record_tuples
    assert any(f"resumed from {checkpoints}/ckpt-1 at step 1" in text for _, _, text in caplog.record_tuples)
    assert (checkpoints / "damaged" / "ckpt-2.data-00000-of-00001").stat().st_size == 100
    assert json.loads((run_dir / "results.json").read_text())["step"] == 3
    capsys.readouterr()
    for path in checkpoints.glob("ckpt-*.data-*"):
        path.unlink()
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"error: no usable checkpoint in {checkpoints} (ckpt-3: "), line
    assert line.endswith("; move that folder away to start the run afresh"), line
