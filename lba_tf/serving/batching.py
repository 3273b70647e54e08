"""Request batching: ``BatchScheduler`` merges concurrent requests, runs them, splits the results."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from lba_tf.serving.errors import ServingError


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)


class BatchScheduler:
    """Merges concurrent requests with the same key into batches, runs them, splits the results.

    A request is queued under a key (model, version, signature and per-example input shapes,
    so that its arrays can be concatenated with the others'). A batching thread takes the key
    whose oldest request waited longest, waits until the key holds ``max_batch_size`` examples
    or that request has waited ``timeout_s``, runs the merged batch and hands each request its
    rows. A batch that fails is re-run request by request so that one bad request (an
    undecodable image) fails alone.

    Args:
        max_batch_size: largest merged batch (a larger single request runs alone).
        timeout_s: longest wait for more requests.
        num_threads: batching threads.
    """

    def __init__(self, max_batch_size: int = 32, timeout_s: float = 0.002, num_threads: int = 1):
        self.max_batch_size, self.timeout_s = int(max_batch_size), float(timeout_s)
        self._queues: dict[tuple, collections.deque] = {}
        self._runners: dict[tuple, Callable] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batching-{i}", daemon=True) for i in range(num_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, key: tuple, run: Callable[[dict], dict], inputs: dict[str, np.ndarray]
    ) -> concurrent.futures.Future:
        """Queue one request.

        Args:
            key: requests with equal keys may be merged; ``run`` must be the same for them.
            run: batched inputs -> outputs by name, each ``[batch, ...]``.
            inputs: this request's arrays, each ``[size, ...]``.

        Returns:
            A future of this request's outputs.
        """
        task = _Task(inputs, len(next(iter(inputs.values()))))
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            self._queues.setdefault(key, collections.deque()).append(task)
            self._runners[key] = run
            self._cond.notify_all()
        return task.future

    def close(self) -> None:
        """Run what is queued, then stop the batching threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _queued(self, key: tuple) -> int:
        return sum(task.size for task in self._queues.get(key, ()))

    def _take(self) -> tuple[Callable, list[_Task]] | None:
        """Wait for a batch to be due and take it off the queue (``None`` once closed and empty)."""
        with self._cond:
            while True:
                if not self._queues:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                key = min(self._queues, key=lambda k: self._queues[k][0].enqueued)
                deadline = self._queues[key][0].enqueued + self.timeout_s
                while (
                    not self._closed
                    and key in self._queues
                    and self._queued(key) < self.max_batch_size
                    and time.monotonic() < deadline
                ):
                    self._cond.wait(max(deadline - time.monotonic(), 0.0))
                if key not in self._queues:  # another batching thread took it
                    continue
                queue, tasks, total = self._queues[key], [], 0
                while queue and (not tasks or total + queue[0].size <= self.max_batch_size):
                    total += queue[0].size
                    tasks.append(queue.popleft())
                run = self._runners[key]
                if not queue:
                    del self._queues[key], self._runners[key]
                return run, tasks

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            run, tasks = batch
            try:
                self._execute(run, tasks)
            except BaseException as err:  # keep the thread alive whatever a run raises
                for task in tasks:
                    if not task.future.done():
                        task.future.set_exception(err)

    @staticmethod
    def _execute(run: Callable, tasks: list[_Task]) -> None:
        if len(tasks) == 1:
            try:
                tasks[0].future.set_result(run(tasks[0].inputs))
            except Exception as err:
                tasks[0].future.set_exception(err)
            return
        merged = {name: np.concatenate([task.inputs[name] for task in tasks]) for name in tasks[0].inputs}
        try:
            outputs = run(merged)
        except ServingError:
            for task in tasks:
                BatchScheduler._execute(run, [task])
            return
        offsets = np.cumsum([task.size for task in tasks])[:-1]
        parts = {name: np.split(value, offsets) for name, value in outputs.items()}
        for i, task in enumerate(tasks):
            task.future.set_result({name: pieces[i] for name, pieces in parts.items()})
