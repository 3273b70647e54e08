"""BatchScheduler: requests merged up to the batch size, results split back, failures kept apart."""

import threading
import time

import grpc
import numpy as np
import pytest

from lba_tf.serving.server import BatchScheduler, ServingError


def test_scheduler_merges_queued_requests_and_splits_results():
    sizes = []

    def run(batch):
        sizes.append(len(batch["x"]))
        return {"y": batch["x"] * 10}

    scheduler = BatchScheduler(max_batch_size=4, timeout_s=5.0)
    try:
        futures = [scheduler.submit("k", run, {"x": np.array(v)}) for v in ([1], [2, 3], [4], [5, 6, 7], [8])]
        results = [f.result(timeout=30)["y"].tolist() for f in futures]
    finally:
        scheduler.close()
    # 1 + 2 + 1 fill a batch of 4 at once (no waiting for the timeout); [5, 6, 7] does not fit
    # beside them and starts the next batch, which [8] fills
    assert sizes == [4, 4]
    assert results == [[10], [20, 30], [40], [50, 60, 70], [80]]


def test_scheduler_reruns_a_failed_batch_request_by_request():
    sizes = []

    def run(batch):
        sizes.append(len(batch["x"]))
        if (batch["x"] < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative")
        return {"y": batch["x"] + 1}

    scheduler = BatchScheduler(max_batch_size=3, timeout_s=5.0)
    try:
        futures = [scheduler.submit("k", run, {"x": np.array([v])}) for v in (1, -1, 2)]
        assert futures[0].result(timeout=30)["y"].tolist() == [2]
        with pytest.raises(ServingError, match="negative"):
            futures[1].result(timeout=30)
        assert futures[2].result(timeout=30)["y"].tolist() == [3]
    finally:
        scheduler.close()
    assert sizes == [3, 1, 1, 1]


def test_scheduler_keeps_keys_apart():
    seen = []

    def run(batch):
        seen.append(batch["x"].tolist())
        return {"y": batch["x"]}

    scheduler = BatchScheduler(max_batch_size=8, timeout_s=0.05)
    try:
        futures = [scheduler.submit(key, run, {"x": np.array([v])}) for key, v in (("a", 1), ("b", 2), ("a", 3))]
        assert [f.result(timeout=30)["y"].tolist() for f in futures] == [[1], [2], [3]]
    finally:
        scheduler.close()
    assert sorted(seen) == [[1, 3], [2]]


def test_scheduler_threads_run_batches_side_by_side():
    # each batch waits inside ``run`` until a second batch has started: only two batching
    # threads can get both through (one thread would time out at the barrier)
    barrier = threading.Barrier(2, timeout=20)
    threads = set()

    def run(batch):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return {"y": batch["x"] * 2}

    scheduler = BatchScheduler(max_batch_size=1, timeout_s=0.0, num_threads=2)
    try:
        futures = [scheduler.submit("k", run, {"x": np.array([v])}) for v in (1, 2)]
        assert [f.result(timeout=30)["y"].tolist() for f in futures] == [[2], [4]]
    finally:
        scheduler.close()
    assert threads == {"batching-0", "batching-1"}


def test_a_request_larger_than_the_batch_size_runs_alone():
    sizes = []

    def run(batch):
        sizes.append(len(batch["x"]))
        return {"y": -batch["x"]}

    scheduler = BatchScheduler(max_batch_size=2, timeout_s=5.0)
    try:
        futures = [scheduler.submit("k", run, {"x": np.array(v)}) for v in ([1, 2, 3], [4], [5])]
        assert [f.result(timeout=30)["y"].tolist() for f in futures] == [[-1, -2, -3], [-4], [-5]]
    finally:
        scheduler.close()
    assert sizes == [3, 2]


def test_a_batch_failing_with_another_error_fails_each_of_its_requests():
    def run(batch):
        raise RuntimeError("the model broke")

    scheduler = BatchScheduler(max_batch_size=2, timeout_s=0.05)
    try:
        futures = [scheduler.submit("k", run, {"x": np.array([v])}) for v in (1, 2)]
        for future in futures:
            with pytest.raises(RuntimeError, match="the model broke"):
                future.result(timeout=30)
        survivor = scheduler.submit("k", lambda batch: {"y": batch["x"]}, {"x": np.array([3])})
        assert survivor.result(timeout=30)["y"].tolist() == [3]  # the batching thread lives on
    finally:
        scheduler.close()


def test_close_runs_what_is_queued_then_refuses_new_requests():
    scheduler = BatchScheduler(max_batch_size=8, timeout_s=60.0)
    started = time.monotonic()
    future = scheduler.submit("k", lambda batch: {"y": batch["x"] + 1}, {"x": np.array([1])})
    scheduler.close()  # does not wait out the 60 s timeout
    assert future.result(timeout=0)["y"].tolist() == [2]
    assert time.monotonic() - started < 30
    with pytest.raises(ServingError) as info:
        scheduler.submit("k", lambda batch: batch, {"x": np.array([1])})
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
