"""ModelManager: the highest complete versions on disk loaded, the others unloaded, failures not retried."""

import os
import shutil
import threading

import grpc
import pytest

from lba_tf.serving import versions
from lba_tf.serving.errors import ServingError
from lba_tf.serving.versions import ModelManager


def _complete(path):
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "wb").close()


def test_present_versions_are_complete_positive_integer_directories(tmp_path):
    assert ModelManager("lba", str(tmp_path / "absent")).present_versions() == []
    for name in ("10", "2", "0", ".incoming", "draft"):
        _complete(tmp_path / name)
    os.makedirs(tmp_path / "3")  # no saved_model.pb yet
    assert ModelManager("lba", str(tmp_path)).present_versions() == [2, 10]


def test_poll_keeps_the_highest_versions_loaded(export_base, tmp_path):
    for version in (1, 2, 3):
        shutil.copytree(export_base / "lba" / "1", tmp_path / str(version))
    manager = ModelManager("lba", str(tmp_path), num_versions=2)
    manager.poll()
    assert manager.versions() == [2, 3]
    assert manager.get().version == 3 and manager.get(2).version == 2
    shutil.rmtree(tmp_path / "3")
    manager.poll()
    assert manager.versions() == [1, 2]
    assert manager.get().version == 2


def test_get_without_versions_or_of_an_unloaded_one(tmp_path):
    manager = ModelManager("lba", str(tmp_path))
    manager.poll()
    with pytest.raises(ServingError) as info:
        manager.get()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "Latest(lba)" in info.value.message
    with pytest.raises(ServingError) as info:
        manager.get(4)
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "Specific(lba, 4)" in info.value.message


def test_failed_version_is_retried_only_once_its_directory_changes(tmp_path, monkeypatch):
    attempts = []

    def failing_servable(path, version):
        attempts.append(version)
        raise ValueError("corrupt SavedModel")

    monkeypatch.setattr(versions, "Servable", failing_servable)
    _complete(tmp_path / "1")
    manager = ModelManager("lba", str(tmp_path))
    manager.poll()
    manager.poll()
    assert attempts == [1] and manager.versions() == []
    stamp = os.path.getmtime(tmp_path / "1")
    os.utime(tmp_path / "1", (stamp + 5, stamp + 5))
    manager.poll()
    assert attempts == [1, 1]


def test_polling_thread_stops(tmp_path):
    manager = ModelManager("stopper", str(tmp_path))
    manager.start_polling(0.01)
    assert "poll-stopper" in [thread.name for thread in threading.enumerate()]
    manager.stop_polling()
    assert "poll-stopper" not in [thread.name for thread in threading.enumerate()]
