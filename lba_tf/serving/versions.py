"""The loaded versions of one model, kept current by polling its base path (version policy "latest")."""

from __future__ import annotations

import os
import threading

import grpc

from lba_tf.log import logger
from lba_tf.serving.errors import ServingError
from lba_tf.serving.servable import Servable


class ModelManager:
    """The loaded versions of one model under ``<base_path>``, kept current by polling.

    Version policy "latest": the ``num_versions`` highest integer-named directories holding a
    ``saved_model.pb`` are loaded; other versions are unloaded. A version that fails to load is
    retried when its directory changes.

    Args:
        name: the model name clients use.
        base_path: the directory holding the version directories.
        num_versions: how many of the highest versions stay loaded.
    """

    def __init__(self, name: str, base_path: str, num_versions: int = 2):
        self.name, self.base_path, self.num_versions = name, base_path, int(num_versions)
        self._servables: dict[int, Servable] = {}
        self._failed: dict[int, float] = {}
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
        """Load the versions the policy wants and unload the others."""
        with self._poll_lock:
            wanted = self.present_versions()[-self.num_versions :]
            for version in wanted:
                if version not in self._servables:
                    self._load(version)
            with self._lock:
                for version in set(self._servables) - set(wanted):
                    del self._servables[version]
                    logger.info("model %s: unloaded version %d", self.name, version)

    def _load(self, version: int) -> None:
        path = os.path.join(self.base_path, str(version))
        stamp = os.path.getmtime(path)
        if self._failed.get(version) == stamp:
            return
        try:
            servable = Servable(path, version)
            warmed = servable.warm_up()
        except Exception as err:
            self._failed[version] = stamp
            logger.error("model %s: version %d failed to load: %s", self.name, version, err)
            return
        with self._lock:
            self._servables[version] = servable
        logger.info("model %s: loaded version %d (%d warm-up requests)", self.name, version, warmed)

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

    def get(self, version: int | None = None) -> Servable:
        """The servable of ``version`` (default: the highest loaded).

        Raises:
            ServingError: UNAVAILABLE when nothing is loaded yet, NOT_FOUND for a version that
                is not loaded.
        """
        with self._lock:
            if version is None:
                if not self._servables:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"Servable not found for request: Latest({self.name}): no version of the model is loaded yet",
                    )
                return self._servables[max(self._servables)]
            if version not in self._servables:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})"
                )
            return self._servables[version]
