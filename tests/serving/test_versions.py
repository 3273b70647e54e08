"""ModelManager: the highest complete versions loaded, failed loads retried, the served one kept until a newer loads."""

import logging
import os
import shutil
import threading

import grpc
import pytest

from lba_tf.serving import versions
from lba_tf.serving.errors import ServingError
from lba_tf.serving.versions import ModelManager, VersionState


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
    assert manager.states() == {1: VersionState("AVAILABLE"), 2: VersionState("AVAILABLE"), 3: VersionState("END")}


def test_get_without_versions_or_of_an_unloaded_one_is_not_found(tmp_path):
    # TF Serving (core/basic_manager.cc) answers NOT_FOUND whether or not any version is loaded
    manager = ModelManager("lba", str(tmp_path))
    manager.poll()
    with pytest.raises(ServingError) as info:
        manager.get()
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(lba)",
    )
    with pytest.raises(ServingError) as info:
        manager.get(4)
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(lba, 4)",
    )


class _FakeServable:
    """A servable whose versions listed in ``broken`` fail to load; every attempt is recorded."""

    broken: set = set()
    attempts: list = []

    def __init__(self, path, version):
        _FakeServable.attempts.append(version)
        if version in _FakeServable.broken:
            raise OSError(f"no variables in {path}")
        self.path, self.version = path, version

    def warm_up(self):
        return 0


@pytest.fixture
def fake_servable(monkeypatch):
    monkeypatch.setattr(versions, "Servable", _FakeServable)
    monkeypatch.setattr(_FakeServable, "broken", set())
    monkeypatch.setattr(_FakeServable, "attempts", [])
    return _FakeServable


def test_failed_load_is_retried_then_given_up_until_the_directory_changes(tmp_path, fake_servable, caplog):
    fake_servable.broken.add(1)
    _complete(tmp_path / "1")
    manager = ModelManager("lba", str(tmp_path), max_num_load_retries=2, load_retry_interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger="lba_tf"):
        manager.poll()
        assert manager.states() == {1: VersionState("LOADING")}  # waiting to retry, as TF Serving's harness
        for _ in range(4):
            manager.poll()
    assert fake_servable.attempts == [1, 1, 1] and manager.versions() == []  # one attempt and two retries
    state = manager.states()[1]
    assert state.state == "END" and state.error.code == grpc.StatusCode.UNKNOWN
    assert state.error.message == f"OSError: no variables in {tmp_path / '1'}"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"model lba: version 1 is not served: 3 of 3 load attempts failed (UNKNOWN: OSError: no variables in "
        f"{tmp_path / '1'}); it is tried again once its directory changes"
    ]
    assert [r.getMessage().split(",")[0] for r in caplog.records if r.levelno == logging.WARNING] == [
        "model lba: version 1 failed to load (attempt 1 of 3)",
        "model lba: version 1 failed to load (attempt 2 of 3)",
    ]
    stamp = os.path.getmtime(tmp_path / "1")
    os.utime(tmp_path / "1", (stamp + 5, stamp + 5))  # a new copy
    fake_servable.broken.clear()
    manager.poll()
    assert fake_servable.attempts == [1, 1, 1, 1] and manager.versions() == [1]
    assert manager.states() == {1: VersionState("AVAILABLE")}


def test_a_retry_waits_for_the_interval(tmp_path, fake_servable):
    fake_servable.broken.add(1)
    _complete(tmp_path / "1")
    manager = ModelManager("lba", str(tmp_path), load_retry_interval_s=3600.0)
    manager.poll()
    manager.poll()
    assert fake_servable.attempts == [1]


def test_the_served_version_stays_until_a_newer_one_has_loaded(tmp_path, fake_servable):
    _complete(tmp_path / "10")
    manager = ModelManager("lba", str(tmp_path), num_versions=1, load_retry_interval_s=0.0)
    manager.poll()
    fake_servable.broken.add(11)
    _complete(tmp_path / "11")
    for _ in range(3):
        manager.poll()
        assert manager.versions() == [10] and manager.get().version == 10
    fake_servable.broken.clear()
    manager.poll()
    assert manager.versions() == [11]
    assert manager.states() == {10: VersionState("END"), 11: VersionState("AVAILABLE")}


def test_every_version_removed_is_unloaded(tmp_path, fake_servable):
    _complete(tmp_path / "1")
    manager = ModelManager("lba", str(tmp_path), num_versions=1)
    manager.poll()
    shutil.rmtree(tmp_path / "1")
    manager.poll()
    assert manager.versions() == []


def test_a_version_removed_while_waiting_to_retry_is_cancelled(tmp_path, fake_servable):
    fake_servable.broken.add(2)
    _complete(tmp_path / "2")
    manager = ModelManager("lba", str(tmp_path), load_retry_interval_s=0.0)
    manager.poll()
    shutil.rmtree(tmp_path / "2")
    manager.poll()
    state = manager.states()[2]
    assert (state.state, state.error.code, state.error.message) == (
        "END",
        grpc.StatusCode.CANCELLED,
        "Loading of servable cancelled",
    )
    assert fake_servable.attempts == [2]


def test_an_incomplete_copy_completed_later_is_served_without_touching_its_directory(export_base, tmp_path):
    # saved_model.pb written before variables/: the first load fails; completing variables/ leaves
    # the version directory's mtime as it was, and the retry loads it
    source = export_base / "lba" / "1"
    shutil.copytree(source, tmp_path / "1")
    manager = ModelManager("lba", str(tmp_path), num_versions=1, load_retry_interval_s=0.0)
    manager.poll()
    shutil.copytree(source, tmp_path / "2", ignore=lambda d, names: names if d == str(source / "variables") else [])
    stamp = os.stat(tmp_path / "2").st_mtime_ns
    manager.poll()
    assert manager.versions() == [1] and manager.states()[2] == VersionState("LOADING")
    for name in os.listdir(source / "variables"):
        shutil.copy(source / "variables" / name, tmp_path / "2" / "variables")
    assert os.stat(tmp_path / "2").st_mtime_ns == stamp
    manager.poll()
    assert manager.versions() == [2] and manager.get().version == 2


def test_polling_thread_stops(tmp_path):
    manager = ModelManager("stopper", str(tmp_path))
    manager.start_polling(0.01)
    assert "poll-stopper" in [thread.name for thread in threading.enumerate()]
    manager.stop_polling()
    assert "poll-stopper" not in [thread.name for thread in threading.enumerate()]
