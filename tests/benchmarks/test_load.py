"""The load generator of the serving benchmarks: every path gets its requests, in turns."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

from bench_serving import run_alternating  # noqa: E402


def test_paths_take_turns_and_each_gets_all_its_requests():
    order = []

    def path(name):
        def call():
            order.append(name)
            if name == "b" and order.count("b") == 3:
                raise RuntimeError("third call fails")

        return call

    stats = run_alternating({"a": path("a"), "b": path("b")}, clients=1, requests=7, rounds=3)
    # 7 requests in 3 rounds: 3, 2, 2 per path, "a" first in every round
    assert "".join(order) == "aaabbbaabbaabb"
    assert stats["a"]["errors"] == 0 and stats["b"]["errors"] == 1
    assert stats["b"]["first_error"] == "RuntimeError: third call fails"
    assert stats["a"]["requests_per_s"] > 0 and stats["a"]["p50"] <= stats["a"]["p99"]


def test_every_client_sends_its_share():
    calls = []
    stats = run_alternating({"only": lambda: calls.append(1)}, clients=4, requests=5, rounds=2)
    assert len(calls) == 20
    assert stats["only"]["errors"] == 0
