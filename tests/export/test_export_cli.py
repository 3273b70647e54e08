"""python -m lba_tf.export: weights, run directories and PyTorch checkpoints to a verified SavedModel."""

import os
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import load_config
from lba_tf.export import saved_model
from lba_tf.export.__main__ import is_torch_checkpoint, main
from lba_tf.export.saved_model import ExportVerificationError
from lba_tf.log import logger
from lba_tf.models.lba import build_model
from lba_tf.run_dir import RunDir
from tests.tiny import TINY_OVERRIDES, set_args


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_cli")
    model = build_model(load_config(None, TINY_OVERRIDES), num_classes=6)
    path = root / "tiny.weights.h5"
    model.save_weights(path)
    return model, path


def _embed_served(version_dir, images, modality):
    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures["serving_default"](images=tf.constant(images), modality=tf.constant(modality))
    return out["embedding"].numpy()


def test_weights_file_exports_a_verified_version(weights, tmp_path, capsys):
    model, path = weights
    assert main(["--weights", str(path), "--output", str(tmp_path), "--name", "tiny", *set_args(TINY_OVERRIDES)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert pathlib.Path(printed) == tmp_path / "tiny" / "1"
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 16, 3), dtype=np.uint8)
    served = _embed_served(printed, images, np.array([0, 1], np.int32))
    from lba_tf.data.preprocess import normalize

    expected = model.embed(normalize(images), tf.constant([0, 1])).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert main(["--weights", str(path), "--output", str(tmp_path), "--name", "tiny", *set_args(TINY_OVERRIDES)]) == 0
    assert (tmp_path / "tiny" / "2" / "saved_model.pb").exists()


def _run_directory(weights_file, run):
    """A tiny run directory whose last epoch's weights are ``weights_file``."""
    RunDir.for_training(load_config(None, TINY_OVERRIDES), str(run)).write_info(
        num_classes=6, steps_per_epoch=2, image_height=32, image_width=16
    )
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.weights.h5").write_bytes(weights_file.read_bytes())
    return run


def test_run_directory_exports_its_last_epoch_with_its_config(weights, tmp_path, capsys):
    run = _run_directory(weights[1], tmp_path / "run")
    assert main(["--weights", str(run), "--output", str(tmp_path / "out"), "--version", "7"]) == 0
    assert (tmp_path / "out" / "lba" / "7" / "saved_model.pb").exists()
    # the last epoch's weights by default; the best-on-test ones only when asked for
    assert main(["--weights", str(run), "--best", "--output", str(tmp_path / "out")]) == 2
    assert "has no weights/best.weights.h5" in capsys.readouterr().err


def test_authors_checkpoint_is_recognised_and_converted(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.torch_reference.lba import LbAReference
    from tests.torch_reference.resnet import randomize_

    reference = randomize_(LbAReference(num_classes=5, depth=18, width=4), seed=4).eval()
    src = tmp_path / "best.t"
    torch.save({"net": reference.state_dict()}, src)
    assert is_torch_checkpoint(src)
    assert main(["--weights", str(src), "--output", str(tmp_path / "out"), *set_args(TINY_OVERRIDES)]) == 0
    images = np.random.default_rng(1).integers(0, 256, size=(2, 32, 16, 3), dtype=np.uint8)
    served = _embed_served(tmp_path / "out" / "lba" / "1", images, np.array([1, 1], np.int32))
    from lba_tf.data.preprocess import normalize
    from tests.torch_reference.parity import l2_normalize

    x = torch.tensor(normalize(images).numpy().transpose(0, 3, 1, 2))
    expected = l2_normalize(reference(x, infrared=True)["pooled"].detach().numpy())
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_authors_checkpoint_as_saved_exports_with_no_config(tmp_path, capsys):
    """A checkpoint written as the authors' training script writes it (state dict of a
    DataParallel model under ``net``, numpy CMC / mAP / mINP, the epoch), exported with no
    --config: the model's depth and width come from the checkpoint, the image size from the
    recipe (288 x 144), and the export's embeddings are the reference's."""
    torch = pytest.importorskip("torch")
    from tests.torch_reference.lba import LbAReference
    from tests.torch_reference.parity import l2_normalize
    from tests.torch_reference.resnet import randomize_

    reference = randomize_(LbAReference(num_classes=6, depth=50, width=8), seed=5).eval()
    src = tmp_path / "ep_80.t"
    torch.save(
        {
            "net": {"module." + k: v for k, v in reference.state_dict().items()},
            "cmc": np.linspace(0.5, 1.0, 20).astype(np.float32),
            "mAP": np.float64(0.55),
            "mINP": np.float64(0.41),
            "epoch": 80,
        },
        src,
    )
    assert main(["--weights", str(src), "--output", str(tmp_path / "out")]) == 0
    version = pathlib.Path(capsys.readouterr().out.strip().splitlines()[-1])
    images = np.random.default_rng(2).integers(0, 256, size=(2, 288, 144, 3), dtype=np.uint8)
    from lba_tf.data.preprocess import normalize

    x = torch.tensor(normalize(images).numpy().transpose(0, 3, 1, 2)).double()
    for modality in (0, 1):
        served = _embed_served(version, images, np.full([2], modality, np.int32))
        with torch.no_grad():
            expected = l2_normalize(reference.double()(x, infrared=modality == 1)["pooled"].numpy())
        np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)


def test_a_config_that_contradicts_the_checkpoint_is_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from tests.torch_reference.lba import LbAReference

    src = tmp_path / "best.t"
    torch.save({"net": LbAReference(num_classes=3, depth=18, width=4).state_dict()}, src)
    assert main(["--weights", str(src), "--output", str(tmp_path / "out"), "--set", "model.width=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {src} is a ResNet-18 of width 4, the config says model.width=16: leave out "
        "--config to take the checkpoint's, or --set model.width=4"
    ]
    assert not (tmp_path / "out").exists()


def test_keras_weights_are_not_mistaken_for_torch(weights):
    assert not is_torch_checkpoint(weights[1])


_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d [A-Z]+ ")


def _one_error_line(capsys) -> str:
    """The one line the command printed to stderr besides its log lines (``HH:MM:SS LEVEL ...``)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not _LOG_LINE.match(line)]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_an_existing_version_is_refused_before_anything_is_built(weights, tmp_path, capsys):
    run = _run_directory(weights[1], tmp_path / "run")
    (tmp_path / "out" / "lba" / "3").mkdir(parents=True)
    assert main(["--weights", str(run), "--output", str(tmp_path / "out"), "--version", "3"]) == 2
    assert _one_error_line(capsys) == (
        f"error: {tmp_path / 'out' / 'lba' / '3'} already exists: leave out --version to write the next one (4), "
        "or pass another"
    )


@pytest.mark.parametrize(
    "source, overrides, says",
    [
        (
            "run",
            ["model.width=8"],
            "run was trained with model.width=4 (config.yaml), the config given says model.width=8",
        ),
        ("run", ["model.method=baseline"], "the config given says model.method=baseline"),
        ("file", ["model.depth=34"], "holds a ResNet-18 of width 4 and method full, the config says model.depth=34"),
        ("file", [], "the config says model.width=16: pass the config it was trained with, or --set model.width=4"),
    ],
)
def test_a_config_that_does_not_fit_the_weights_is_one_line(weights, tmp_path, capsys, source, overrides, says):
    """The tiny ResNet-18 of width 4 exported with another model; ``[]``: the default config's width 16."""
    path = _run_directory(weights[1], tmp_path / "run") if source == "run" else weights[1]
    tiny = TINY_OVERRIDES if source == "file" and overrides else []
    assert main(["--weights", str(path), "--output", str(tmp_path / "out"), *set_args([*tiny, *overrides])]) == 2
    assert says in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_weights_that_cannot_be_used_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "model.weights.h5"
    garbage.write_bytes(b"not hdf5")
    assert main(["--weights", str(garbage), "--output", str(tmp_path / "out")]) == 2
    assert (
        _one_error_line(capsys) == f"error: {garbage} is not a Keras weights file (HDF5): was it written by training?"
    )
    RunDir.for_training(load_config(None, TINY_OVERRIDES), str(tmp_path / "run"))  # a run that never trained
    assert main(["--weights", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 2
    assert "has no weights/last.weights.h5" in _one_error_line(capsys)
    assert main(["--weights", str(tmp_path / "missing.weights.h5")]) == 2
    assert _one_error_line(capsys) == f"error: weights not found: {tmp_path / 'missing.weights.h5'}"


def test_a_keras_file_that_does_not_load_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logger, "handlers", [])  # logs to this test's stderr, not to an earlier test's
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a zip archive")
    assert main(["--weights", str(broken), "--output", str(tmp_path / "out")]) == 2
    assert _one_error_line(capsys).startswith(f"error: {broken} is not a .keras model that loads: ")
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_one_line(weights, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "exports"
    assert main(["--weights", str(weights[1]), "--output", str(output), *set_args(TINY_OVERRIDES)]) == 2
    assert _one_error_line(capsys) == (
        f"error: cannot write the export under {output / 'lba'}: {tmp_path / 'a-file'} is not a directory; "
        "pass --output a writable directory"
    )


def test_an_export_failing_verification_is_not_published(weights, tmp_path, capsys, monkeypatch):
    def failing_verify(path, model, image_size, shown_as):
        assert os.listdir(tmp_path / "lba") == [os.path.basename(path)]  # checked under its hidden name
        raise ExportVerificationError(f"{shown_as}: serving_default differs from the in-process model by 0.5 > 1e-05")

    monkeypatch.setattr(saved_model, "verify_export", failing_verify)
    monkeypatch.setattr(saved_model.EmbeddingExportModule, "signature", lambda self, name: None)
    monkeypatch.setattr(saved_model.tf.saved_model, "save", lambda module, path, signatures: None)
    monkeypatch.setattr(saved_model, "write_warmup_requests", lambda *args: 0)
    monkeypatch.setattr(logger, "handlers", [])  # logs to this test's stderr, not to an earlier test's
    args = ["--weights", str(weights[1]), "--output", str(tmp_path), *set_args(TINY_OVERRIDES)]
    assert main(args) == 1
    assert _one_error_line(capsys) == (
        f"error: {tmp_path / 'lba' / '1'} (not published): serving_default differs from the in-process model by "
        "0.5 > 1e-05"
    )
    assert os.listdir(tmp_path / "lba") == []
