"""python -m lba_tf.train: what it refuses, in one line, before any work."""

import pytest

from lba_tf.config import load_config
from lba_tf.run_dir import RunDir
from lba_tf.train import main


def test_run_dir_of_another_config_is_one_line_before_any_work(tmp_path, capsys):
    RunDir.for_training(load_config(None), str(tmp_path / "run"))
    assert main(["--run-dir", str(tmp_path / "run"), "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'run'} holds a run with another config (train.lr: 0.1 -> 0.5); use another --run-dir"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_override_fails_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-dir", str(tmp_path / "never"), "--set", "train.lrr=0.1"])
    assert exit_info.value.code == 2
    assert "unknown key 'train.lrr'; did you mean 'train.lr'?" in capsys.readouterr().err
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
        "<this config>`, or pass --set model.pretrained=random)"
    )
    assert not (tmp_path / "never").exists()
