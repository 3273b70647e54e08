"""python -m lba_tf.evaluate: weights in, the protocol's table out, JSON beside the weights."""

import json

import numpy as np
import pytest
from PIL import Image

from lba_tf.config import load_config
from lba_tf.data.datasets.registry import build_dataset
from lba_tf.evaluate import main
from lba_tf.evaluation.results import results_json
from lba_tf.evaluation.runner import evaluate_model
from lba_tf.models.lba import build_model
from lba_tf.run_dir import RunDir
from tests.tiny import TINY_OVERRIDES, set_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model's weights (untrained: the numbers only have to be reproduced)."""
    root = tmp_path_factory.mktemp("eval")
    cache = str(root / "cache")
    config = load_config(None, TINY_OVERRIDES)
    dataset = build_dataset(config.data, cache_dir=cache)
    model = build_model(config, dataset.num_classes)
    weights = root / "model.weights.h5"
    model.save_weights(weights)
    expected = results_json(evaluate_model(model, dataset, height=32, width=16, trials=2, batch_size=16))
    return root, cache, config, weights, expected


def test_weights_file_gives_the_in_process_table_and_writes_json(trained, capsys):
    root, cache, _, weights, expected = trained
    assert main(["--weights", str(weights), "--cache-dir", cache, *set_args(TINY_OVERRIDES)]) == 0
    out = capsys.readouterr().out
    assert "infrared_to_visible" in out and "chance" in out and "mean" in out
    saved = json.loads((root / "model.eval.json").read_text())
    got = saved["results"]["infrared_to_visible"]
    want = expected["infrared_to_visible"]
    for key in ("rank1", "rank5", "mAP", "mINP"):
        np.testing.assert_allclose(got["mean"][key], want["mean"][key], rtol=1e-6)
    assert len(got["trials"]) == 2
    picture = root / "model.eval_ranked_infrared_to_visible.png"
    assert f"ranked lists: {picture}" in out
    with Image.open(picture) as image:
        assert image.mode == "RGB" and image.height > 6 * 128  # six queries, 32 x 16 images enlarged


def _run_directory(trained, run):
    """A run directory whose last weights are the fixture's and whose best weights are another
    model's (seed 99), so that which file was read shows in the numbers."""
    _, _, config, weights, _ = trained
    run_dir = RunDir.for_training(config, str(run))
    run_dir.write_info(num_classes=8, steps_per_epoch=2, image_height=32, image_width=16)
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.weights.h5").write_bytes(weights.read_bytes())
    other = build_model(config.replace(**{"train.seed": 99}), 8)
    other.save_weights(run / "weights" / "best.weights.h5")
    return run


def test_run_directory_uses_its_config_and_last_epoch_weights(trained, tmp_path):
    _, cache, _, _, expected = trained
    run = _run_directory(trained, tmp_path / "run")
    assert main(["--weights", str(run), "--cache-dir", cache, "--trials", "1"]) == 0
    saved = json.loads((run / "evaluation.json").read_text())
    assert saved["weights_choice"] == "last epoch"
    assert saved["weights"] == str(run / "weights" / "last.weights.h5")
    trial0 = saved["results"]["infrared_to_visible"]["trials"][0]
    np.testing.assert_allclose(trial0["mAP"], expected["infrared_to_visible"]["trials"][0]["mAP"], rtol=1e-6)
    assert saved["results"]["infrared_to_visible"]["num_trials"] == 1


def test_best_on_test_weights_are_opt_in_and_labelled(trained, tmp_path, capsys):
    _, cache, _, _, expected = trained
    run = _run_directory(trained, tmp_path / "run")
    assert main(["--weights", str(run), "--best", "--cache-dir", cache, "--trials", "1"]) == 0
    assert "(best on the test set" in capsys.readouterr().out
    saved = json.loads((run / "evaluation-best-on-test.json").read_text())
    assert saved["weights_choice"].startswith("best on the test set") and "optimistic" in saved["weights_choice"]
    trial0 = saved["results"]["infrared_to_visible"]["trials"][0]
    assert trial0["mAP"] != pytest.approx(expected["infrared_to_visible"]["trials"][0]["mAP"], rel=1e-6)
    assert not (run / "evaluation.json").exists()
    # its own pictures: those of the last weights are not overwritten
    assert sorted(p.name for p in run.glob("*.png")) == ["evaluation-best-on-test_ranked_infrared_to_visible.png"]


def test_best_needs_a_run_directory(trained, capsys):
    _, _, _, weights, _ = trained
    assert main(["--weights", str(weights), "--best"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --best picks a run directory's best weights; {weights} is not a run directory"
    )


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "nope.weights.h5")]) == 2
    assert capsys.readouterr().err.strip() == f"error: weights not found: {tmp_path / 'nope.weights.h5'}"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "source, overrides, says",
    [
        (
            "run",
            ["model.depth=34"],
            "run was trained with model.depth=18 (config.yaml), the config given says model.d",
        ),
        ("run", ["model.gem_p=1.0"], "the config given says model.gem_p=1.0: leave these out of --config/--set"),
        ("file", ["model.method=baseline"], "method full, the config says model.method=baseline: pass the config"),
        ("file", ["model.width=8"], "the config says model.width=8: pass the config it was trained with, or --set mod"),
    ],
)
def test_a_config_that_does_not_fit_the_weights_is_one_line(trained, tmp_path, capsys, source, overrides, says):
    _, cache, _, weights, _ = trained
    path = _run_directory(trained, tmp_path / "run") if source == "run" else weights
    tiny = TINY_OVERRIDES if source == "file" else []
    assert main(["--weights", str(path), "--cache-dir", cache, *set_args([*tiny, *overrides])]) == 2
    assert says in _one_error_line(capsys)


def test_an_output_that_cannot_be_written_is_refused_before_evaluating(trained, tmp_path, capsys):
    _, cache, _, weights, _ = trained
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "eval.json"
    assert (
        main(["--weights", str(weights), "--output", str(output), "--cache-dir", cache, *set_args(TINY_OVERRIDES)]) == 2
    )
    assert _one_error_line(capsys) == (
        f"error: cannot write the results to {output}: {tmp_path / 'a-file'} is not a directory; pass --output FILE"
    )


def test_a_dataset_that_cannot_be_read_is_one_line(trained, tmp_path, capsys):
    _, _, _, weights, _ = trained
    args = ["--weights", str(weights), *set_args(TINY_OVERRIDES)]
    assert main([*args, "--set", "data.dataset=sysu"]) == 2
    assert _one_error_line(capsys) == (
        "error: data.root is null: set it to the sysu dataset folder (e.g. --set data.root=/path/to/sysu)"
    )
    (tmp_path / "a-file").write_text("")
    assert main([*args, "--cache-dir", str(tmp_path / "a-file" / "cache")]) == 2
    assert _one_error_line(capsys) == (
        f"error: Not a directory: {tmp_path / 'a-file' / 'cache'} "
        "(the dataset's folder: data.root, or --cache-dir for the synthetic set)"
    )


def test_trials_must_be_positive(trained, capsys):
    _, _, _, weights, _ = trained
    with pytest.raises(SystemExit) as info:
        main(["--weights", str(weights), "--trials", "0"])
    assert info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("argument --trials: must be a positive integer, got 0")
    )
