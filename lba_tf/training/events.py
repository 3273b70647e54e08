"""TensorBoard event files of a resumed run: drop what the checkpoint does not cover.

The trainer flushes its summaries before each checkpoint, so every event up to a checkpoint's
step is on disk when that checkpoint exists. Events written after it (up to a kill) belong to
steps the resumed run takes again; they are removed when it resumes, so each step's summaries
are written once and the log reads as the uninterrupted run's.
"""

from __future__ import annotations

import os
import pathlib

import tensorflow as tf
from tensorflow.core.util import event_pb2

from lba_tf.log import logger


def _events(path: pathlib.Path) -> list[event_pb2.Event]:
    """The file's events; a record cut short by a kill ends the list."""
    out = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            out.append(event_pb2.Event.FromString(record.numpy()))
    except tf.errors.DataLossError:
        pass
    return out


def event_files(logdir: str | pathlib.Path) -> list[pathlib.Path]:
    """Every TensorBoard event file under ``logdir``, in name order (TensorBoard's reading order)."""
    root = pathlib.Path(logdir)
    return sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else []


def drop_after(logdir: str | pathlib.Path, step: int) -> int:
    """Rewrite the event files under ``logdir`` without the events of steps after ``step``.

    Returns the number of events removed. Each file is rewritten beside itself and renamed over
    it, so a kill during this leaves either the old file or the new one.
    """
    removed = 0
    for path in event_files(logdir):
        events = _events(path)
        kept = [e for e in events if e.step <= step]
        if len(kept) == len(events) and path.stat().st_size == sum(_record_size(e) for e in events):
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for event in kept:
                writer.write(event.SerializeToString())
        os.replace(tmp, path)
        removed += len(events) - len(kept)
    if removed:
        logger.info("resuming at step %d: removed %d summaries of later steps from %s", step, removed, logdir)
    return removed


def _record_size(event: event_pb2.Event) -> int:
    # a TFRecord is an 8-byte length, its 4-byte CRC, the data and the data's 4-byte CRC
    return 16 + event.ByteSize()
