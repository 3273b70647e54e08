"""Peak resident memory of a training step, and of the serving process under a long load.

Training: ``bench_training.py`` runs one case (warm-up and one timed step) in a fresh
subprocess and reports its ``ru_maxrss``. Serving: a small LbA encoder is exported and served
on 127.0.0.1; clients send ``--requests`` (10,000 by default) batch-1 Predict calls and the
server's ``VmRSS`` is read after the first 100 and at checkpoints after; growth past 5% of the
first reading is reported as a leak.

    python benchmarks/bench_memory.py --requests 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from bench_serving import build_model, run_load, start_server  # noqa: E402
from common import current_rss_mb, record  # noqa: E402

LEAK_TOLERANCE = 0.05
"""Largest allowed growth of the server's memory from 100 requests to the last reading."""


def training_peak_rss(depth: int, width: int, image_size: tuple[int, int], method: str, P: int = 8, K: int = 4) -> dict:
    """Peak RSS (MiB) of a fresh process that builds the model and runs 2 training steps."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "training.json")
        subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "bench_training.py"),
                "--depth",
                str(depth),
                "--width",
                str(width),
                "--image-size",
                *map(str, image_size),
                "-P",
                str(P),
                "-K",
                str(K),
                "--method",
                method,
                "--warmup",
                "1",
                "--steps",
                "1",
                "--matmul-size",
                "256",
                "--json",
                out,
            ],
            check=True,
            capture_output=True,
        )
        with open(out) as f:
            row = json.load(f)["rows"][0]
    return {"case": row["case"], "peak_rss_mb": row["peak_rss_mb"]}


def serving_rss_curve(
    requests: int, checkpoints: tuple[int, ...], image_size: tuple[int, int], clients: int = 4
) -> list[dict]:
    """Server RSS after each checkpoint's number of batch-1 requests (``lba-tiny`` model)."""
    from lba_tf.export.saved_model import export_saved_model, sample_inputs
    from lba_tf.serving import client

    curve = []
    with tempfile.TemporaryDirectory() as base:
        export_saved_model(build_model("lba-tiny", image_size), base, "lba", image_size=image_size)
        process, port = start_server(os.path.join(base, "lba"), 32, 2.0)
        try:
            stub = client.connect(f"127.0.0.1:{port}")
            pixels = np.random.default_rng(0).integers(0, 256, (1, *image_size, 3), np.uint8)
            inputs = sample_inputs("embed_visible", pixels, np.zeros([1], np.int32))
            sent = errors = 0
            for target in sorted(set(checkpoints) | {requests}):
                if target > requests:
                    break
                per_client = -(-(target - sent) // clients)
                stats = run_load(lambda: client.predict(stub, "lba", "embed_visible", inputs), clients, per_client)
                sent += per_client * clients
                errors += stats["errors"]
                curve.append(
                    {
                        "requests": sent,
                        "server_rss_mb": current_rss_mb(process.pid),
                        "errors": errors,
                        "p50_ms": stats["p50"],
                    }
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    return curve


def run(
    requests: int = 10_000, image_size: tuple[int, int] = (64, 32), training: tuple = (18, 16, (64, 32), "full")
) -> dict:
    """Training-step peak RSS and the serving RSS curve; the leak verdict in the notes."""
    case = training_peak_rss(*training)
    rows = [{"what": f"training step peak RSS ({case['case']})", "mb": case["peak_rss_mb"]}]
    checkpoints = (100, 1000, 2500, 5000, requests)
    curve = serving_rss_curve(requests, checkpoints, image_size)
    rows += [
        {
            "what": f"server RSS after {point['requests']} requests",
            "mb": point["server_rss_mb"],
            "errors": point["errors"],
            "p50_ms": point["p50_ms"],
        }
        for point in curve
    ]
    first, last = curve[0]["server_rss_mb"], curve[-1]["server_rss_mb"]
    growth = (last - first) / first
    verdict = "no leak" if growth <= LEAK_TOLERANCE else "LEAK"
    notes = [
        f"server RSS {first:.1f} MiB after {curve[0]['requests']} requests, {last:.1f} MiB after "
        f"{curve[-1]['requests']}: {growth:+.1%} ({verdict}; tolerance {LEAK_TOLERANCE:.0%})"
    ]
    settings = {
        "requests": requests,
        "image_size": list(image_size),
        "serving_model": "lba-tiny",
        "training": list(training),
        "server_growth": growth,
        "leak": growth > LEAK_TOLERANCE,
    }
    return record("memory", settings, rows, notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"))
    parser.add_argument(
        "--training",
        nargs=5,
        default=("18", "16", "64", "32", "full"),
        metavar=("DEPTH", "WIDTH", "H", "W", "METHOD"),
        help="the training case whose peak RSS is measured",
    )
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args(argv)
    depth, width, height, image_width, method = args.training
    result = run(
        args.requests, tuple(args.image_size), (int(depth), int(width), (int(height), int(image_width)), method)
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    for row in result["rows"]:
        print(f"{row['what']}: {row['mb']:.1f} MiB")
    print(result["notes"][0])


if __name__ == "__main__":
    main()
