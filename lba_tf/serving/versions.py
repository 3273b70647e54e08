"""The loaded versions of one model, kept current by polling its base path (version policy "latest")."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import grpc

from lba_tf.log import logger
from lba_tf.serving.errors import ServingError, status_of
from lba_tf.serving.servable import Servable


@dataclass(frozen=True)
class VersionState:
    """What GetModelStatus reports for one version, as TF Serving's ``ServableState``.

    Attributes:
        state: ``"LOADING"`` (being loaded, or waiting to retry a failed load), ``"AVAILABLE"``
            (served) or ``"END"`` (unloaded, or given up on: then ``error`` says why); the
            names of ``ModelVersionStatus.State``.
        error: the last load failure of a version given up on, else ``None``.
    """

    state: str
    error: ServingError | None = None


@dataclass
class _Attempts:
    """Failed loads of one version directory (``stamp``: its mtime at the first failure)."""

    stamp: float
    failures: int = 0
    next_try: float = 0.0


class ModelManager:
    """The loaded versions of one model under ``<base_path>``, kept current by polling.

    Version policy "latest": the ``num_versions`` highest integer-named directories holding a
    ``saved_model.pb`` are wanted; the others are unloaded, except that while no wanted
    version has loaded, the highest loaded one stays served (TF Serving's availability
    preserving policy, ``core/availability_preserving_policy.cc``). A load that fails (a copy
    still under way, a warm-up request that fails) is retried ``max_num_load_retries`` times,
    ``load_retry_interval_s`` apart (at the first poll after that), then given up on until the
    version directory changes (its mtime); TF Serving's ``--max_num_load_retries`` and
    ``--load_retry_interval_micros`` (``core/loader_harness.cc``).

    Args:
        name: the model name clients use.
        base_path: the directory holding the version directories.
        num_versions: how many of the highest versions stay loaded.
        max_num_load_retries: retries after a version's first failed load (0: one attempt).
        load_retry_interval_s: seconds between the attempts.
    """

    def __init__(
        self,
        name: str,
        base_path: str,
        num_versions: int = 2,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
    ):
        self.name, self.base_path, self.num_versions = name, base_path, int(num_versions)
        self.max_num_load_retries, self.load_retry_interval_s = int(max_num_load_retries), float(load_retry_interval_s)
        self._servables: dict[int, Servable] = {}
        self._states: dict[int, VersionState] = {}
        self._attempts: dict[int, _Attempts] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def present_versions(self) -> list[int]:
        """Complete version directories on disk, ascending."""
        if not os.path.isdir(self.base_path):
            return []
        return sorted(
            int(entry)
            for entry in os.listdir(self.base_path)
            if entry.isdigit()
            and int(entry) > 0
            and os.path.exists(os.path.join(self.base_path, entry, "saved_model.pb"))
        )

    def poll(self) -> None:
        """Load the wanted versions that are due, then unload what the policy lets go."""
        with self._poll_lock:
            wanted = self.present_versions()[-self.num_versions :]
            for version in reversed(wanted):  # the highest first, as TF Serving loads them
                if version not in self._servables and self._due(version):
                    self._load(version)
            self._cancel_retries(wanted)
            self._unload(wanted)

    def _due(self, version: int) -> bool:
        """Whether ``version`` may be (re)tried now: never failed, its directory changed, or retry time."""
        attempts = self._attempts.get(version)
        if attempts is None:
            return True
        if os.path.getmtime(os.path.join(self.base_path, str(version))) != attempts.stamp:
            del self._attempts[version]  # a new copy: its attempts start afresh
            return True
        return attempts.failures <= self.max_num_load_retries and time.monotonic() >= attempts.next_try

    def _load(self, version: int) -> None:
        path = os.path.join(self.base_path, str(version))
        stamp = os.path.getmtime(path)
        self._set_state(version, VersionState("LOADING"))
        try:
            servable = Servable(path, version)
            warmed = servable.warm_up()
        except Exception as err:
            self._record_failure(version, stamp, status_of(err))
            return
        self._attempts.pop(version, None)
        with self._lock:
            self._servables[version] = servable
            self._states[version] = VersionState("AVAILABLE")
        logger.info("model %s: loaded version %d (%d warm-up requests)", self.name, version, warmed)

    def _record_failure(self, version: int, stamp: float, error: ServingError) -> None:
        attempts = self._attempts.setdefault(version, _Attempts(stamp))
        attempts.failures += 1
        total = self.max_num_load_retries + 1
        if attempts.failures < total:
            attempts.next_try = time.monotonic() + self.load_retry_interval_s
            logger.warning(
                "model %s: version %d failed to load (attempt %d of %d), retrying in %g s: %s",
                self.name,
                version,
                attempts.failures,
                total,
                self.load_retry_interval_s,
                error.message,
            )
            return
        self._set_state(version, VersionState("END", error))
        logger.error(
            "model %s: version %d is not served: %d of %d load attempts failed (%s: %s); "
            "it is tried again once its directory changes",
            self.name,
            version,
            attempts.failures,
            total,
            error.code.name,
            error.message,
        )

    def _cancel_retries(self, wanted: list[int]) -> None:
        """Versions no longer wanted (removed, or below newer ones) are not retried."""
        for version in set(self._attempts) - set(wanted):
            del self._attempts[version]
            state = self._states.get(version)
            if state is not None and state.state == "LOADING":
                cancelled = ServingError(grpc.StatusCode.CANCELLED, "Loading of servable cancelled")
                self._set_state(version, VersionState("END", cancelled))

    def _unload(self, wanted: list[int]) -> None:
        with self._lock:
            unwanted = sorted(set(self._servables) - set(wanted))
            if wanted and not set(wanted) & set(self._servables):
                unwanted = unwanted[:-1]  # the highest stays served until a wanted version is available
            for version in unwanted:
                del self._servables[version]
                self._states[version] = VersionState("END")
                logger.info("model %s: unloaded version %d", self.name, version)

    def _set_state(self, version: int, state: VersionState) -> None:
        with self._lock:
            self._states[version] = state

    def start_polling(self, seconds: float) -> None:
        """Poll the base path every ``seconds`` in a background thread."""
        self._thread = threading.Thread(target=self._poll_every, args=(seconds,), name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def _poll_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.poll()
            except Exception as err:  # a vanished directory mid-listing, ...: try again next time
                logger.error("model %s: polling failed: %s", self.name, err)

    def stop_polling(self) -> None:
        """Stop the polling thread (after the poll under way, if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def versions(self) -> list[int]:
        """Loaded versions, ascending."""
        with self._lock:
            return sorted(self._servables)

    def states(self) -> dict[int, VersionState]:
        """Every version this manager has handled (loading, served, unloaded, given up on), by version."""
        with self._lock:
            return dict(self._states)

    def get(self, version: int | None = None) -> Servable:
        """The servable of ``version`` (default: the highest loaded).

        Raises:
            ServingError: NOT_FOUND when that version (or, without one, any version) is not
                loaded, with TF Serving's message (``core/basic_manager.cc``).
        """
        with self._lock:
            if version is None:
                if not self._servables:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({self.name})"
                    )
                return self._servables[max(self._servables)]
            if version not in self._servables:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})"
                )
            return self._servables[version]
