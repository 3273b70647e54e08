"""Choosing the checkpoint to resume from when the newest ones are damaged."""

import logging
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.training import checkpoints
from lba_tf.training.checkpoints import CheckpointError


def _state():
    """A variable whose value is the step, a large one (so the data file has something to
    truncate), and the checkpoint object of both."""
    step, big = tf.Variable(-1.0), tf.Variable(tf.zeros([4096]))
    return tf.train.Checkpoint(state={"step": step, "big": big}), step, big


def _three_checkpoints(directory: pathlib.Path) -> None:
    """Checkpoints 1, 2, 3 of :func:`_state`, written as the trainer writes them."""
    checkpoint, step, big = _state()
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=5)
    for n in (1, 2, 3):
        step.assign(float(n))
        big.assign(tf.fill([4096], float(n)))
        manager.save(checkpoint_number=n)


def _restored_step(directory):
    """The checkpoint :func:`checkpoints.repair` chooses, and the step a fresh state restores from it."""
    checkpoint, step, _ = _state()
    chosen = checkpoints.repair(directory)
    checkpoint.restore(chosen).assert_consumed()
    return chosen, float(step.numpy())


def _truncate(path: pathlib.Path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "truncated data": lambda d: _truncate(d / "ckpt-3.data-00000-of-00001"),
    "truncated index": lambda d: _truncate(d / "ckpt-3.index"),
    "deleted data": lambda d: (d / "ckpt-3.data-00000-of-00001").unlink(),
    "flipped byte in data": lambda d: _flip_last_byte(d / "ckpt-3.data-00000-of-00001"),
}


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_moved_aside_and_named(tmp_path, damage, caplog):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    DAMAGE[damage](directory)
    with caplog.at_level(logging.WARNING, logger="lba_tf"):
        chosen, step = _restored_step(directory)
    assert pathlib.Path(chosen).name == "ckpt-2" and step == 2.0
    assert "skipped damaged checkpoint" in caplog.text and "ckpt-3" in caplog.text
    assert not list(directory.glob("ckpt-3.*"))  # moved, not left to be listed again
    assert list((directory / "damaged").glob("ckpt-3.*"))
    state = tf.train.get_checkpoint_state(str(directory))
    assert [pathlib.Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
    assert pathlib.Path(tf.train.latest_checkpoint(str(directory))).name == "ckpt-2"


@pytest.mark.parametrize("content", ["", "garbage {{{ not a proto"])
def test_an_emptied_or_garbled_state_file_does_not_restart_the_run_at_step_0(tmp_path, content):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    (directory / "checkpoint").write_text(content)
    chosen, step = _restored_step(directory)
    assert pathlib.Path(chosen).name == "ckpt-3" and step == 3.0
    assert pathlib.Path(tf.train.latest_checkpoint(str(directory))).name == "ckpt-3"
    assert not (directory / "damaged").exists()


def test_a_deleted_state_file_is_rebuilt_from_the_checkpoint_files(tmp_path):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    (directory / "checkpoint").unlink()
    assert pathlib.Path(checkpoints.repair(directory)).name == "ckpt-3"
    state = tf.train.get_checkpoint_state(str(directory))
    assert [pathlib.Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2", "ckpt-3"]


def test_no_usable_checkpoint_is_one_message_naming_each_and_the_way_out(tmp_path):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    for n in (1, 2, 3):
        (directory / f"ckpt-{n}.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError) as err:
        checkpoints.repair(directory)
    message = str(err.value)
    assert "\n" not in message
    for n in (1, 2, 3):
        assert f"ckpt-{n}: " in message and f" ckpt-{n}.data-00000-of-00001; No such file" in message, message
    assert "move that folder away" in message
    assert list(directory.glob("ckpt-*.index"))  # nothing moved when nothing can be resumed


def test_an_empty_or_missing_directory_is_a_fresh_start(tmp_path):
    assert checkpoints.repair(tmp_path / "none") is None
    (tmp_path / "empty").mkdir()
    assert checkpoints.repair(tmp_path / "empty") is None


def test_intact_checkpoints_are_left_as_they_are(tmp_path):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert pathlib.Path(checkpoints.repair(directory)).name == "ckpt-3"
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_read_whole_reads_every_tensor(tmp_path):
    directory = tmp_path / "checkpoints"
    _three_checkpoints(directory)
    checkpoints.read_whole(str(directory / "ckpt-2"))
    reader = tf.train.load_checkpoint(str(directory / "ckpt-2"))
    big = [n for n in reader.get_variable_to_shape_map() if "big" in n and "OPTIMIZER" not in n]
    np.testing.assert_array_equal(reader.get_tensor(big[0]), np.full([4096], 2.0, np.float32))
