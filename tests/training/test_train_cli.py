"""python -m lba_tf.train's run directory: new, resumed, or refused."""

import pytest
import yaml

from lba_tf.config import load_config
from lba_tf.train import main, resolve_run_dir


def test_new_run_gets_a_timestamped_directory_with_the_resolved_config(tmp_path):
    cfg = load_config(None, ["train.lr=0.05"])
    run = resolve_run_dir(cfg, None, runs_root=str(tmp_path))
    assert run.parent == tmp_path / "synthetic"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.05


def test_unfinished_run_of_the_same_config_is_resumed(tmp_path):
    cfg = load_config(None)
    first = resolve_run_dir(cfg, None, runs_root=str(tmp_path))
    assert resolve_run_dir(cfg, None, runs_root=str(tmp_path)) == first
    fresh = resolve_run_dir(cfg, None, runs_root=str(tmp_path), fresh=True)
    assert fresh != first and fresh.parent == first.parent


def test_finished_or_different_runs_are_not_resumed(tmp_path):
    cfg = load_config(None)
    first = resolve_run_dir(cfg, None, runs_root=str(tmp_path))
    (first / "results.json").write_text("{}")
    other = load_config(None, ["train.lr=0.5"])
    (tmp_path / "synthetic" / "zzz").mkdir()
    (tmp_path / "synthetic" / "zzz" / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
    assert resolve_run_dir(cfg, None, runs_root=str(tmp_path)) not in (first, tmp_path / "synthetic" / "zzz")


def test_explicit_run_dir_with_another_config_is_refused(tmp_path):
    resolve_run_dir(load_config(None), str(tmp_path / "run"))
    with pytest.raises(SystemExit, match=r"another config \(train.lr: 0.1 -> 0.5\)"):
        resolve_run_dir(load_config(None, ["train.lr=0.5"]), str(tmp_path / "run"))


def test_bad_override_fails_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-dir", str(tmp_path / "never"), "--set", "train.lrr=0.1"])
    assert exit_info.value.code == 2
    assert "unknown key 'train.lrr'; did you mean 'train.lr'?" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm"])
def test_dataset_config_without_imagenet_weights_stops_before_any_work(tmp_path, capsys, name):
    code = main(["--config", f"configs/{name}.yaml", "--run-dir", str(tmp_path / "never"),
                 "--set", f"data.root={tmp_path / 'absent'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: model.pretrained is not set")
    assert "python -m lba_tf.tools.import_torch resnet50.pth weights/resnet50_imagenet.weights.h5" in err
    assert "--set model.pretrained=random" in err
    assert not (tmp_path / "never").exists()


def test_missing_pretrained_file_stops_before_any_work(tmp_path, capsys):
    code = main(["--run-dir", str(tmp_path / "never"), "--set", f"model.pretrained={tmp_path / 'w.weights.h5'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        f"error: model.pretrained: {tmp_path / 'w.weights.h5'}: file not found (make it with "
        "`python -m lba_tf.tools.import_torch resnet18.pth weights/resnet18_imagenet.weights.h5 --config "
        "<this config>`, or pass --set model.pretrained=random)")
    assert not (tmp_path / "never").exists()
