"""Inference throughput of the exported SavedModel, in-process and through the local server.

Exports the LbA encoder (ResNet-50 at 288 x 144 by default, random weights: the cost does not
depend on them) with ``lba_tf.export.saved_model``, then for each batch size times one client
calling the ``embed_visible`` signature of ``tf.saved_model.load`` in this process, and the same
requests through ``python -m lba_tf.serving.server`` on 127.0.0.1 (the helpers of
``bench_serving.py``). Reports p50/p99 latency, images/s, the served / in-process latency ratio
and the server's resident memory.

    python benchmarks/bench_inference.py --batch-sizes 1 8 16 32
    python benchmarks/bench_inference.py --depth 18 --width 16 --image-size 64 32 --images 256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# common first: it tunes the C allocator before TensorFlow loads (lba_tf.runtime)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_serving import run_alternating, run_load, start_server  # noqa: E402
from common import current_rss_mb, markdown_table, proc_memory_mb, record  # noqa: E402

from lba_tf.export.saved_model import export_saved_model, sample_inputs  # noqa: E402
from lba_tf.serving import client  # noqa: E402

SIGNATURE = "embed_visible"


def run(
    depth: int = 50,
    width: int = 64,
    image_size: tuple[int, int] = (288, 144),
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32),
    images: int = 64,
    min_requests: int = 3,
    serve: bool = True,
) -> dict:
    """Time every batch size in-process and served.

    Args:
        depth: ResNet depth of the exported encoder.
        width: its stem channels.
        image_size: ``(height, width)`` of the export and of the requests.
        batch_sizes: images per request.
        images: about how many images each measurement sends (``ceil(images / batch)``
            requests, at least ``min_requests``), after one warm-up request.
        min_requests: fewest timed requests per batch size.
        serve: also measure the local server.
    """
    from lba_tf.models.lba import LbAModel

    height, image_width = image_size
    model = LbAModel(num_classes=395, depth=depth, width=width, method="baseline")
    model.build_for(height, image_width)
    rows = []
    with tempfile.TemporaryDirectory() as base:
        path = export_saved_model(model, base, "lba", image_size=image_size)
        function = tf.saved_model.load(path).signatures[SIGNATURE]
        process = stub = None
        if serve:
            process, port = start_server(os.path.join(base, "lba"), max(batch_sizes), 2.0)
            stub = client.connect(f"127.0.0.1:{port}")
        try:
            for batch in batch_sizes:
                pixels = np.random.default_rng(batch).integers(0, 256, (batch, height, image_width, 3), np.uint8)
                inputs = sample_inputs(SIGNATURE, pixels, np.zeros([batch], np.int32))
                tensors = {k: tf.constant(v) for k, v in inputs.items()}
                requests = max(min_requests, math.ceil(images / batch))
                paths = {"in-process": lambda tensors=tensors: function(**tensors)["embedding"].numpy()}
                if serve:
                    paths["served"] = lambda inputs=inputs: client.predict(stub, "lba", SIGNATURE, inputs)
                for call in paths.values():
                    run_load(call, 1, 1)
                stats = run_alternating(paths, 1, requests, rounds=min(requests, 5))
                for name in paths:
                    rows.append(
                        {
                            "batch": batch,
                            "path": name,
                            "requests": requests,
                            "p50_ms": stats[name]["p50"],
                            "p99_ms": stats[name]["p99"],
                            "images_per_s": stats[name]["requests_per_s"] * batch,
                            "errors": stats[name]["errors"],
                        }
                    )
                if serve:
                    rows.append(
                        {
                            "batch": batch,
                            "path": "served / in-process",
                            "p50_ms": stats["served"]["p50"] / stats["in-process"]["p50"],
                            "p99_ms": stats["served"]["p99"] / stats["in-process"]["p99"],
                            "images_per_s": stats["served"]["requests_per_s"] / stats["in-process"]["requests_per_s"],
                        }
                    )
            server_memory = (
                {"rss_mb": proc_memory_mb(process.pid, "VmRSS"), "peak_rss_mb": proc_memory_mb(process.pid, "VmHWM")}
                if serve
                else {}
            )
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    settings = {
        "model": f"LbA ResNet-{depth} width {width}",
        "image_size": list(image_size),
        "signature": SIGNATURE,
        "clients": 1,
        "images_per_measurement": images,
        "server": server_memory,
        "client_rss_mb": current_rss_mb(),
    }
    return record(
        "inference",
        settings,
        rows,
        [
            "p50/p99 over the timed requests of one client (p99 of a few requests is "
            "their maximum); 'served / in-process' rows are ratios (latency, throughput)"
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, nargs=2, default=(288, 144), metavar=("H", "W"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=(1, 8, 16, 32))
    parser.add_argument("--images", type=int, default=64, help="images per measurement (about)")
    parser.add_argument("--min-requests", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="only the in-process SavedModel")
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args(argv)
    result = run(
        args.depth,
        args.width,
        tuple(args.image_size),
        tuple(args.batch_sizes),
        args.images,
        args.min_requests,
        not args.no_serve,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(markdown_table(result["rows"]))
    print(f"server memory: {result['settings']['server']}")


if __name__ == "__main__":
    main()
