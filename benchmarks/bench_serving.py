"""Load test of the local serving stack, and its overhead over in-process SavedModel calls.

Exports a small model (the test stand-in, or a tiny LbA ResNet-18), starts
``python -m lba_tf.serving.server`` on it in a subprocess, and has N concurrent gRPC clients send
M Predict requests each at every batch size. The same load is then run in this process against
``tf.saved_model.load`` of the same export. Reports errors, p50/p99 latency and throughput for
both, and their ratio (the cost of gRPC, protos and the batching queue).

    python benchmarks/bench_serving.py --clients 1 8 --requests 50 --batch-sizes 1 16
    python benchmarks/bench_serving.py --model lba-tiny --image-size 64 32
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the stand-in model lives with the tests

# common first: it tunes the C allocator before TensorFlow loads (lba_tf.runtime)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import record  # noqa: E402

from lba_tf.export.saved_model import export_saved_model, sample_inputs  # noqa: E402
from lba_tf.serving import client  # noqa: E402


def build_model(kind: str, image_size: tuple[int, int]):
    """The model to export: ``standin`` (two conv stems) or ``lba-tiny`` (LbA, ResNet-18, width 16)."""
    if kind == "standin":
        from tests.serving.standin import StandInEncoder

        return StandInEncoder()
    from lba_tf.models.lba import LbAModel

    return LbAModel(num_classes=10, depth=18, width=16, method="baseline").build_for(*image_size)


def start_server(
    model_dir: str, max_batch_size: int, batch_timeout_ms: float, num_batch_threads: int | None = None
) -> tuple[subprocess.Popen, int]:
    """Start the server on a free port; return the process and its gRPC port."""
    threads = [] if num_batch_threads is None else ["--num-batch-threads", str(num_batch_threads)]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lba_tf.serving.server",
            "--model-base-path",
            model_dir,
            "--port",
            "0",
            "--max-batch-size",
            str(max_batch_size),
            "--batch-timeout-ms",
            str(batch_timeout_ms),
            *threads,
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    for line in process.stderr:
        if "gRPC on " in line:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            return process, int(line.split("gRPC on ")[1].split(",")[0].rsplit(":", 1)[1])
    raise RuntimeError(f"the server did not start (exit code {process.wait()})")


def _load(call, clients: int, requests: int) -> tuple[list[float], list[str], float]:
    """``clients`` threads each calling ``call()`` ``requests`` times: latencies (s), errors, wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker():
        for _ in range(requests):
            start = time.perf_counter()
            try:
                call()
            except Exception as err:  # counted, not raised: the benchmark reports them
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start


def _stats(latencies: list[float], errors: list[str], wall: float) -> dict:
    ms = np.array(latencies) * 1000.0
    return {
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "requests_per_s": len(latencies) / wall,
    }


def run_load(call, clients: int, requests: int) -> dict:
    """``clients`` threads each calling ``call()`` ``requests`` times; latency percentiles (ms),
    errors and requests/s."""
    return _stats(*_load(call, clients, requests))


def run_alternating(calls: dict, clients: int, requests: int, rounds: int = 5) -> dict:
    """Like :func:`run_load` for several paths, taking turns in ``rounds`` rounds.

    Each path gets ``requests`` per client in all, split over the rounds, so that a change of
    the machine's load during the measurement falls on every path alike.
    """
    pooled = {name: ([], [], 0.0) for name in calls}
    for index in range(rounds):
        share = requests // rounds + (index < requests % rounds)
        for name, call in calls.items():
            latencies, errors, wall = _load(call, clients, share)
            previous = pooled[name]
            pooled[name] = (previous[0] + latencies, previous[1] + errors, previous[2] + wall)
    return {name: _stats(*value) for name, value in pooled.items()}


def run(
    model: str = "standin",
    image_size: tuple[int, int] = (32, 16),
    signature: str = "embed_visible",
    clients: tuple[int, ...] = (1, 8),
    requests: int = 50,
    batch_sizes: tuple[int, ...] = (1, 16),
    max_batch_size: int = 32,
    batch_timeout_ms: float = 2.0,
    num_batch_threads: int | None = None,
) -> dict:
    """Served and in-process load at every client count and batch size.

    One client measures the bare cost of a request (gRPC, protos, the batching queue); several
    measure it under load, where the server merges their requests and the in-process baseline
    runs their calls side by side.
    """
    image_size = tuple(image_size)
    with tempfile.TemporaryDirectory() as base:
        path = export_saved_model(build_model(model, image_size), base, "lba", image_size=image_size)
        loaded = tf.saved_model.load(path)
        process, port = start_server(os.path.join(base, "lba"), max_batch_size, batch_timeout_ms, num_batch_threads)
        try:
            stub = client.connect(f"127.0.0.1:{port}")
            rows = []
            function = loaded.signatures[signature]
            for count in clients:
                for batch in batch_sizes:
                    pixels = np.random.default_rng(batch).integers(0, 256, (batch, *image_size, 3), np.uint8)
                    inputs = sample_inputs(signature, pixels, np.arange(batch, dtype=np.int32) % 2)
                    tensors = {k: tf.constant(v) for k, v in inputs.items()}

                    def served(inputs=inputs):
                        client.predict(stub, "lba", signature, inputs)

                    def in_process(tensors=tensors):
                        function(**tensors)["embedding"].numpy()

                    for call in (served, in_process):  # warm both paths before measuring
                        run_load(call, count, 2)
                    stats = run_alternating({"served": served, "in-process": in_process}, count, requests)
                    for name, value in stats.items():
                        rows.append(
                            {
                                "clients": count,
                                "batch": batch,
                                "path": name,
                                **value,
                                "images_per_s": value["requests_per_s"] * batch,
                            }
                        )
                    rows.append(
                        {
                            "clients": count,
                            "batch": batch,
                            "path": "overhead",
                            "p50": stats["served"]["p50"] / stats["in-process"]["p50"],
                            "p99": stats["served"]["p99"] / stats["in-process"]["p99"],
                            "requests_per_s": stats["in-process"]["requests_per_s"] / stats["served"]["requests_per_s"],
                        }
                    )
        finally:
            process.terminate()
            process.wait(timeout=30)
    settings = {
        "model": model,
        "image_size": list(image_size),
        "signature": signature,
        "clients": list(clients),
        "requests": requests,
        "max_batch_size": max_batch_size,
        "batch_timeout_ms": batch_timeout_ms,
        "num_batch_threads": num_batch_threads or "server default (one per core)",
        "cpus": os.cpu_count(),
    }
    return record(
        "serving",
        settings,
        rows,
        [
            "overhead rows are ratios: served / in-process latency, and in-process / served throughput",
            "requests is per client, the two paths taking turns in 5 rounds; with several "
            "clients the server merges concurrent requests into batches and the "
            "in-process calls run side by side",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("standin", "lba-tiny"), default="standin")
    parser.add_argument("--image-size", type=int, nargs=2, default=(32, 16), metavar=("H", "W"))
    parser.add_argument(
        "--signature", default="embed_visible", choices=("serving_default", "embed_visible", "embed_visible_bytes")
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=(1, 8), help="concurrent clients; one measurement per count"
    )
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=(1, 16))
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument(
        "--num-batch-threads",
        type=int,
        default=None,
        help="server batching threads (default: the server's, one per core)",
    )
    args = parser.parse_args(argv)
    result = run(
        args.model,
        tuple(args.image_size),
        args.signature,
        tuple(args.clients),
        args.requests,
        tuple(args.batch_sizes),
        args.max_batch_size,
        args.batch_timeout_ms,
        args.num_batch_threads,
    )
    image_size = result["settings"]["image_size"]
    print(
        f"model {args.model} {image_size[0]}x{image_size[1]}, signature {args.signature}, "
        f"{args.clients} clients x {args.requests} requests, server batching <= "
        f"{args.max_batch_size} within {args.batch_timeout_ms} ms on "
        f"{result['settings']['num_batch_threads']} threads, {os.cpu_count()} CPUs"
    )
    print(
        f"{'clients':>7} {'batch':>5} {'path':>10} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'img/s':>8}"
    )
    for row in result["rows"]:
        head = f"{row['clients']:7d} {row['batch']:5d} {row['path']:>10}"
        if row["path"] == "overhead":
            print(f"{head} {'':6} {row['p50']:7.2f}x {row['p99']:7.2f}x {row['requests_per_s']:7.2f}x")
            continue
        print(
            f"{head} {row['errors']:6d} {row['p50']:8.2f} {row['p99']:8.2f} "
            f"{row['requests_per_s']:8.1f} {row['images_per_s']:8.1f}"
        )
        if row["errors"]:
            print(f"      first error: {row['first_error']}")
    if any(row.get("errors") for row in result["rows"] if row["path"] == "served"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
