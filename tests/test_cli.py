"""Command-line plumbing: what a weights file says of its model, whether a config fits it, and what
the commands check before TensorFlow starts."""

import subprocess
import sys

import numpy as np
import pytest

from lba_tf.cli import WeightsError, WeightsLayout, load_model, resolve_weights, writable_problem
from lba_tf.config import load_config
from lba_tf.models.lba import LbAModel, build_model
from lba_tf.run_dir import RunDir
from tests.tiny import TINY_OVERRIDES


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights of ResNet-18/34/50 models (method, width and classes varied), and a tiny run."""
    root = tmp_path_factory.mktemp("layouts")
    paths = {}
    for depth, width, method, classes in [(18, 4, "full", 8), (34, 2, "baseline", 5), (50, 2, "full", 3)]:
        model = LbAModel(classes, depth=depth, width=width, method=method, num_identities=3, num_instances=2)
        paths[depth] = root / f"resnet{depth}.weights.h5"
        model.build_for(32, 16).save_weights(paths[depth])
    config = load_config(None, TINY_OVERRIDES)
    run = RunDir.for_training(config, str(root / "run"))
    run.write_info(num_classes=8, steps_per_epoch=2, image_height=32, image_width=16)
    run.weights().parent.mkdir()
    run.weights().write_bytes(paths[18].read_bytes())
    paths["run"] = run.path
    encoder = build_model(config, 8).encoder  # an encoder alone, as model.pretrained files hold
    paths["encoder"] = root / "encoder.weights.h5"
    encoder.save_weights(paths["encoder"])
    return paths


def test_the_layout_is_read_from_the_variables(files):
    assert WeightsLayout.read(files[18]) == WeightsLayout(depth=18, width=4, method="full", num_classes=8)
    assert WeightsLayout.read(files[34]) == WeightsLayout(depth=34, width=2, method="baseline", num_classes=5)
    assert WeightsLayout.read(files[50]) == WeightsLayout(depth=50, width=2, method="full", num_classes=3)


def test_files_that_hold_no_model_are_refused(files, tmp_path):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match=r"is not a Keras weights file \(HDF5\)"):
        WeightsLayout.read(garbage)
    with pytest.raises(WeightsError, match="holds an encoder alone .* not an LbA model"):
        WeightsLayout.read(files["encoder"])


def test_a_config_that_fits_passes(files):
    resolve_weights(str(files[18]), None).check_fits(load_config(None, TINY_OVERRIDES))
    resolve_weights(str(files["run"]), None).check_fits(RunDir(files["run"]).read_config(["data.root=/data"]))


@pytest.mark.parametrize(
    "weights, overrides, message",
    [
        (
            34,
            ["model.depth=34", "model.width=4"],
            "resnet34.weights.h5 holds a ResNet-34 of width 2 and method baseline, the config says model.width=4, "
            "model.method=full: pass the config it was trained with, or --set model.width=2 "
            "--set model.method=baseline",
        ),
        (
            18,
            ["model.depth=50"],
            "resnet18.weights.h5 holds a ResNet-18 of width 4 and method full, the config says model.depth=50: "
            "pass the config it was trained with, or --set model.depth=18",
        ),
        (
            "run",
            ["model.last_stride=2", "model.temperature=10"],
            "run was trained with model.last_stride=1, model.temperature=50.0 (config.yaml), the config given says "
            "model.last_stride=2, model.temperature=10.0: leave these out of --config/--set to use the run's",
        ),
    ],
)
def test_a_config_that_does_not_fit_names_each_setting(files, weights, overrides, message):
    source = resolve_weights(str(files[weights]), None)
    with pytest.raises(WeightsError) as info:
        source.check_fits(load_config(None, [*TINY_OVERRIDES, *overrides]))
    assert str(info.value) == f"{files[weights].parent}/{message}"


def test_a_runs_classifier_must_match_its_run_json(files):
    run = RunDir(files["run"])
    run.write_info(num_classes=6, steps_per_epoch=2, image_height=32, image_width=16)
    try:
        with pytest.raises(WeightsError, match="has a classifier of 8 identities, .*run.json says num_classes=6"):
            resolve_weights(str(run.path), None).check_fits(run.read_config())
    finally:
        run.write_info(num_classes=8, steps_per_epoch=2, image_height=32, image_width=16)


def test_weights_that_fit_the_layout_but_not_the_model_are_one_line(files, tmp_path):
    import h5py

    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(files[18].read_bytes())
    with h5py.File(broken, "r+") as f:  # a BNNeck of another size: depth, width and method still read as before
        del f["bnneck/batch_norm/vars/0"]
        f["bnneck/batch_norm/vars/0"] = np.ones(7, np.float32)
    source = resolve_weights(str(broken), None)
    config = load_config(None, TINY_OVERRIDES)
    source.check_fits(config)
    with pytest.raises(WeightsError) as info:
        load_model(source, config)
    message = str(info.value)
    assert message.startswith(f"{broken} does not load into the model the config builds: ") and "\n" not in message


def test_a_config_that_builds_no_model_is_one_line(files):
    config = load_config(None, [*TINY_OVERRIDES, "data.num_identities=2", "data.num_instances=4"])
    with pytest.raises(WeightsError, match=r"^the config builds no model: negatives need .* got P=2, K=4$"):
        load_model(resolve_weights(str(files[18]), None), config)


def test_writable_problem_finds_the_nearest_existing_ancestor(tmp_path):
    (tmp_path / "file").write_text("")
    assert writable_problem(tmp_path / "new" / "deeper") is None
    assert writable_problem(tmp_path / "file" / "sub") == f"{tmp_path / 'file'} is not a directory"


@pytest.mark.parametrize("command", ["lba_tf.export", "lba_tf.evaluate"])
@pytest.mark.parametrize("mistake", [["--set", "bad.key=1"], ["--set", "model.depth=50"], ["--set", "model.width=x"]])
def test_config_mistakes_are_one_line_before_tensorflow_loads(files, command, mistake):
    """Each command in a fresh interpreter: exit 2, one ``error:`` line, TensorFlow never imported."""
    code = (
        "import sys\n"
        f"from {command}{'.__main__' if command.endswith('export') else ''} import main\n"
        f"code = main({['--weights', str(files['run']), *mistake]!r})\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
