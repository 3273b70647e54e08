"""Choosing the checkpoint a run resumes from: the newest one that reads back whole.

A full disk, a kill during a copy or a deleted file can leave the newest checkpoint damaged (a
truncated ``.data`` or ``.index``, a missing shard, an empty ``checkpoint`` state file). Resuming
must neither crash on it nor silently start again from step 0, so the files themselves are the
record: every ``ckpt-N.index`` in the directory is a candidate, newest first; each is read in full
(TensorFlow checks every tensor's CRC32C as it reads) before it is restored, so a damaged one is
never half-restored. Damaged checkpoints are moved to ``damaged/`` beside the good ones, not
deleted, and the state file is rewritten to list the good ones.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil

import tensorflow as tf

from lba_tf.log import logger

DAMAGED = "damaged"
_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


class CheckpointError(Exception):
    """No checkpoint of a run directory can be restored; the message names each and why."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint that could not be read back, and the first line of the reason."""

    prefix: str
    reason: str


def candidates(directory: str | pathlib.Path) -> list[str]:
    """The checkpoint prefixes (``<dir>/ckpt-N``) whose index file exists, newest (largest N) first."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _INDEX.match(p.name))]
    return [str(directory / f"ckpt-{n}") for n in sorted(numbers, reverse=True)]


def _reason(err: BaseException, directory: pathlib.Path) -> str:
    text = (getattr(err, "message", None) or str(err) or type(err).__name__).strip().splitlines()[0]
    return f"{type(err).__name__}: {text.replace(str(directory) + '/', '')}"


def read_whole(prefix: str) -> None:
    """Read every tensor of checkpoint ``prefix``; raises whatever the damage makes the reader raise
    (``DataLossError`` for a checksum or a short read, ``NotFoundError`` for a missing file...)."""
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def choose(directory: str | pathlib.Path) -> tuple[str | None, list[Skipped]]:
    """The newest checkpoint in ``directory`` that reads back whole, and the newer ones skipped.

    Returns ``(None, skipped)`` when there is none; ``skipped`` is empty when the directory holds
    no checkpoint at all.
    """
    skipped = []
    for prefix in candidates(directory):
        try:
            read_whole(prefix)
        except Exception as err:  # the reader's errors are of many kinds; each one means "damaged"
            skipped.append(Skipped(prefix, _reason(err, pathlib.Path(directory))))
            continue
        return prefix, skipped
    return None, skipped


def _files_of(prefix: str) -> list[pathlib.Path]:
    path = pathlib.Path(prefix)
    return sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())


def repair(directory: str | pathlib.Path) -> str | None:
    """Prepare ``directory`` for resuming: the checkpoint to restore, or None for a fresh start.

    Damaged checkpoints newer than the chosen one are moved to ``<directory>/damaged/`` (each
    skip logged with its reason), and the ``checkpoint`` state file is rewritten to list the
    intact ones, so ``tf.train.CheckpointManager`` keeps and prunes the right files.

    Raises:
        CheckpointError: checkpoints exist and none of them reads back whole.
    """
    directory = pathlib.Path(directory)
    chosen, skipped = choose(directory)
    if chosen is None and skipped:
        listing = "; ".join(f"{pathlib.Path(s.prefix).name}: {s.reason}" for s in skipped)
        raise CheckpointError(
            f"no usable checkpoint in {directory} ({listing}); move that folder away to start the run afresh"
        )
    if chosen is None:
        return None
    for s in skipped:
        damaged = directory / DAMAGED
        damaged.mkdir(exist_ok=True)
        for file in _files_of(s.prefix):
            shutil.move(str(file), str(damaged / file.name))
        logger.warning("skipped damaged checkpoint %s (%s); moved its files to %s", s.prefix, s.reason, damaged)
    intact = [pathlib.Path(p).name for p in candidates(directory)]  # oldest last; the state file wants oldest first
    state = _readable_state(directory)
    if skipped or state is None or pathlib.Path(state.model_checkpoint_path).name != pathlib.Path(chosen).name:
        # relative names, as CheckpointManager writes them, so the run directory can be moved
        tf.compat.v1.train.update_checkpoint_state(
            str(directory), pathlib.Path(chosen).name, all_model_checkpoint_paths=intact[::-1]
        )
    return chosen


def _readable_state(directory: pathlib.Path):
    try:
        return tf.train.get_checkpoint_state(str(directory))
    except Exception:  # a garbled text proto; it is rewritten
        return None
