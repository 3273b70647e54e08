"""Version directories on disk: staging names say their writer; a killed export's are removed, a live one's kept."""

import os
import signal
import subprocess
import sys
import tempfile

from lba_tf.export import versions
from lba_tf.export.versions import (
    next_version,
    published_versions,
    remove_stale_staging,
    staging_dirs,
    staging_prefix,
    version_problem,
)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _killed_export(model_dir, version: int) -> str:
    """The staging directory of another process that made it and was then killed with SIGKILL."""
    code = (
        "import sys, tempfile, time\n"
        "from lba_tf.export.versions import staging_prefix\n"
        f"print(tempfile.mkdtemp(prefix=staging_prefix({version}), dir={str(model_dir)!r}), flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=_REPO)
    path = writer.stdout.readline().strip()
    writer.send_signal(signal.SIGKILL)
    writer.wait()  # reaped: its pid names no process any more
    writer.stdout.close()
    return path


def test_a_staging_name_says_its_version_host_and_process(tmp_path):
    path = tempfile.mkdtemp(prefix=staging_prefix(12), dir=tmp_path)
    (found,) = staging_dirs(str(tmp_path))
    assert (found.path, found.version, found.host, found.pid) == (path, 12, versions.this_host(), os.getpid())
    assert not found.stale


def test_host_names_with_dashes_and_odd_characters_still_parse(tmp_path, monkeypatch):
    monkeypatch.setattr(versions.socket, "gethostname", lambda: "build-box-7/a b")
    assert versions.this_host() == "build-box-7_a_b"
    tempfile.mkdtemp(prefix=staging_prefix(3), dir=tmp_path)
    (found,) = staging_dirs(str(tmp_path))
    assert (found.version, found.host, found.pid) == (3, "build-box-7_a_b", os.getpid())


def test_a_killed_exports_staging_is_removed_and_a_live_ones_kept(tmp_path):
    killed = _killed_export(tmp_path, 4)
    live = tempfile.mkdtemp(prefix=staging_prefix(5), dir=tmp_path)
    # a process that is gone, but on another machine sharing the directory: it cannot be checked
    elsewhere = tmp_path / ".6.tmp-other-host-999999999-abc123"
    unnamed = tmp_path / ".7.tmp-k2j4h5g6"  # no writer in its name: never touched
    for path in (elsewhere, unnamed):
        path.mkdir()
    assert [s.stale for s in staging_dirs(str(tmp_path))] == [True, False, False]
    assert remove_stale_staging(str(tmp_path)) == [killed]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (live, elsewhere, unnamed))


def test_next_version_counts_published_and_live_staging_versions(tmp_path):
    assert next_version(str(tmp_path / "absent")) == 1
    for entry in ("1", "3", "not-a-version"):
        (tmp_path / entry).mkdir()
    assert published_versions(str(tmp_path)) == [1, 3] and next_version(str(tmp_path)) == 4
    _killed_export(tmp_path, 9)  # a killed export's version is free again
    assert next_version(str(tmp_path)) == 4
    tempfile.mkdtemp(prefix=staging_prefix(5), dir=tmp_path)  # a concurrent export writing 5
    assert next_version(str(tmp_path)) == 6


def test_version_problem_names_a_published_or_running_version(tmp_path):
    (tmp_path / "2").mkdir()
    tempfile.mkdtemp(prefix=staging_prefix(3), dir=tmp_path)
    _killed_export(tmp_path, 4)
    assert version_problem(str(tmp_path), 2) == f"{tmp_path / '2'} already exists"
    assert version_problem(str(tmp_path), 3) == (
        f"version 3 is being written by another export (process {os.getpid()} on {versions.this_host()})"
    )
    assert version_problem(str(tmp_path), 4) is None
    assert version_problem(str(tmp_path), 5) is None
