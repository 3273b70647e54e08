"""Version directories of an export on disk: which numbers are taken, and the hidden staging directories.

A version is written under a hidden staging name beside its final one, ``.<version>.tmp-<host>-<pid>-<random>``,
and renamed once verified (see :func:`lba_tf.export.saved_model.export_saved_model`); servers ignore names
that are not integers. The name says which process writes it, so a later export can tell the staging
directory of a killed export (same host, process gone: removed) from that of a live one (kept).

Nothing here imports TensorFlow: the command line checks a version before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket

_STAGING = re.compile(r"^\.(?P<version>\d+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$")


def this_host() -> str:
    """This machine's name as staging names carry it (characters other than ``[A-Za-z0-9._-]`` as ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def staging_prefix(version: int) -> str:
    """The prefix of this process's staging directory for ``version`` (``tempfile.mkdtemp`` adds the rest)."""
    return f".{int(version)}.tmp-{this_host()}-{os.getpid()}-"


@dataclasses.dataclass(frozen=True)
class Staging:
    """A staging directory found in a model directory.

    Args:
        path: the directory.
        version: the version it will be published as.
        host: the machine of the process writing it.
        pid: that process's id.
    """

    path: str
    version: int
    host: str
    pid: int

    @property
    def stale(self) -> bool:
        """Whether its writer is gone: a process of this host that no longer exists. A staging
        directory of another host (a shared file system) is never stale: its process cannot be
        checked from here."""
        return self.host == this_host() and not process_exists(self.pid)


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def published_versions(model_dir: str) -> list[int]:
    """The integer-named directories of ``model_dir``, ascending (none when it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(entry) for entry in os.listdir(model_dir) if entry.isdigit())


def staging_dirs(model_dir: str) -> list[Staging]:
    """The staging directories in ``model_dir`` whose names say who writes them."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for entry in sorted(os.listdir(model_dir)):
        match = _STAGING.match(entry)
        if match and os.path.isdir(os.path.join(model_dir, entry)):
            found.append(
                Staging(os.path.join(model_dir, entry), int(match["version"]), match["host"], int(match["pid"]))
            )
    return found


def remove_stale_staging(model_dir: str) -> list[str]:
    """Remove the staging directories left by exports that were killed; return their paths."""
    removed = []
    for staging in staging_dirs(model_dir):
        if staging.stale:
            shutil.rmtree(staging.path, ignore_errors=True)
            removed.append(staging.path)
    return removed


def next_version(model_dir: str) -> int:
    """One more than the highest version in ``model_dir``, published or being written (1 when none)."""
    taken = published_versions(model_dir) + [s.version for s in staging_dirs(model_dir) if not s.stale]
    return max(taken, default=0) + 1


def version_problem(model_dir: str, version: int) -> str | None:
    """Why ``version`` cannot be written in ``model_dir`` now, or None when it can."""
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        return f"{final} already exists"
    for staging in staging_dirs(model_dir):
        if staging.version == version and not staging.stale:
            return f"version {version} is being written by another export (process {staging.pid} on {staging.host})"
    return None
