"""A local model server that speaks TensorFlow Serving's gRPC API (and its REST predict).

It serves the export directory ``make export`` writes (``<base>/<name>/<version>/``) with the
services of TF Serving, built on the ``tensorflow-serving-api`` stubs:
``tensorflow.serving.PredictionService`` (``Predict``, ``GetModelMetadata``) and
``tensorflow.serving.ModelService`` (``GetModelStatus``). A client cannot tell it from
``tensorflow_model_server``; ``serving/`` holds the configuration for the real one.

Behaviour, matching TF Serving configured as in ``serving/models.config``:

- version policy "latest" with ``num_versions`` (default 2): the highest version and the one
  before it stay loaded; requests without a version go to the highest. The base path is polled,
  so a version that appears while running is loaded (warm-up requests replayed first) and then
  served, and one that disappears is unloaded. A version that fails to load (a copy still
  under way) is retried ``--max_num_load_retries`` times, ``--load_retry_interval_micros``
  apart; until a newer version has loaded, the one served before stays served. A version given
  up on shows in GetModelStatus as END with the load error, and in the log.
- bad requests get TF Serving's status codes: INVALID_ARGUMENT for a wrong input name, dtype
  or shape, or an undecodable image; FAILED_PRECONDITION for an unknown signature; NOT_FOUND
  for an unknown model or version, or while no version is loaded. The server keeps serving.
- REST bodies over ``--max-message-mb`` are refused by their headers (413), chunked ones as
  soon as they pass it; at most ``--rest-max-connections`` connections are served at once and
  one idle for ``--rest-idle-timeout-s`` is closed.
- concurrent requests for the same signature and input shape are merged into one batch of at
  most ``max_batch_size`` images, waiting at most ``batch_timeout_ms`` for company.

    python -m lba_tf.serving.server --model-base-path exports/lba --port 8500

The parts, one module each: ``errors`` (``ServingError``), ``inputs`` (request tensors checked),
``servable`` (one loaded version), ``versions`` (polling the base path, load retries),
``batching`` (``BatchScheduler``), ``core`` (request handling), ``grpc_api`` and ``rest_api``
(the front ends), ``json_tensor`` (REST's JSON bodies) and ``http_body`` (REST bodies within
the cap); this module starts them (:func:`serve`) and holds the command line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from lba_tf.log import import_tensorflow_quietly, logger, setup_logging
from lba_tf.runtime import tune_allocator
from lba_tf.serving.batching import BatchScheduler
from lba_tf.serving.errors import PortError, ServingError, bind_error

if TYPE_CHECKING:
    from lba_tf.serving.core import ModelServerCore
    from lba_tf.serving.rest_api import RestServer

__all__ = ["BatchScheduler", "ServerHandle", "ServingError", "main", "serve"]


@dataclass
class ServerHandle:
    """A running server: its ports and ``stop()``.

    Attributes:
        host: the bound address.
        port: the gRPC port (the actual one when started on port 0).
        rest_port: the REST port, or ``None`` when REST is off.
        core: request handling, with ``core.models[name]`` the model managers.
    """

    host: str
    port: int
    rest_port: int | None
    core: ModelServerCore
    _grpc_server: grpc.Server
    _http_server: RestServer | None

    def wait_for_version(self, version: int, model_name: str | None = None, timeout: float = 30.0) -> bool:
        """Block until ``version`` is loaded (``True``) or ``timeout`` seconds pass (``False``)."""
        manager = self.core.models[model_name or next(iter(self.core.models))]
        deadline = time.monotonic() + timeout
        while version not in manager.versions():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting requests, let running ones finish within ``grace`` seconds, then stop."""
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        self._grpc_server.stop(grace).wait()
        for manager in self.core.models.values():
            manager.stop_polling()
        self.core.scheduler.close()


def _check_bindable(host: str, port: int, api: str) -> None:
    """Bind and release ``host:port`` with a plain socket, so that a taken port is one clear error
    (gRPC's own failure says only that it could not bind, after logging a native error line)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(address)
    except OSError as err:
        raise bind_error(host, port, api, err) from None


def _bind_grpc(server: grpc.Server, host: str, port: int) -> int:
    """Bind ``server`` to ``host:port`` (it serves once started); the port bound."""
    try:
        return server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio's error for an address it cannot bind
        raise PortError(f"cannot bind {host}:{port} for gRPC", None) from None


def serve(
    model_base_path: str,
    model_name: str = "lba",
    port: int = 8500,
    host: str = "127.0.0.1",
    rest_port: int | None = None,
    max_batch_size: int = 32,
    batch_timeout_ms: float = 2.0,
    num_batch_threads: int | None = None,
    max_message_mb: int = 64,
    poll_seconds: float = 1.0,
    num_versions: int = 2,
    workers: int = 16,
    max_num_load_retries: int = 5,
    load_retry_interval_s: float = 60.0,
    rest_max_connections: int = 64,
    rest_idle_timeout_s: float = 30.0,
) -> ServerHandle:
    """Load the model and start serving it; returns at once with a handle.

    The ports are checked first; the versions present at start are loaded before the ports
    open, as TF Serving does.

    Args:
        model_base_path: directory of version directories (``<base>/<name>``).
        model_name: the name clients put in ``model_spec.name``.
        port: gRPC port; 0 picks a free one (see ``handle.port``).
        host: address to bind; localhost unless told otherwise.
        rest_port: port of the REST API (0 picks a free one); ``None`` for no REST.
        max_batch_size: largest merged batch.
        batch_timeout_ms: longest wait for more requests to merge.
        num_batch_threads: threads running batches (default: one per CPU core, so that batches
            of a small model, which leave cores idle, overlap).
        max_message_mb: largest gRPC message either way, in MiB.
        poll_seconds: how often the base path is checked for new versions.
        num_versions: how many of the highest versions stay loaded.
        workers: gRPC handler threads.
        max_num_load_retries: retries of a version that failed to load (TF Serving's default, 5).
        load_retry_interval_s: seconds between them (TF Serving's default, 60).
        rest_max_connections: REST connections served at once; more are answered 503.
        rest_idle_timeout_s: a REST connection idle this long is closed.

    Raises:
        PortError: the gRPC or REST port cannot be bound (an ``OSError``; ``str()`` says which and why).
        ValueError: ``LBA_TF_MALLOC`` holds an unknown value (see ``lba_tf.runtime``).
    """
    tune_allocator()  # idempotent; it takes effect if TensorFlow is not loaded yet (see lba_tf.runtime)
    import_tensorflow_quietly()  # its CUDA stub prints at load time otherwise
    # the modules below load TensorFlow: imported here, after the allocator, so that importing
    # this module (the command line's --help, BatchScheduler, ServingError) stays light
    from lba_tf.serving.core import ModelServerCore
    from lba_tf.serving.grpc_api import add_services
    from lba_tf.serving.rest_api import RestServer
    from lba_tf.serving.versions import ModelManager

    for api, number in (("gRPC", port), ("REST", rest_port)):
        if number:  # before loading anything: a taken port is reported at once, alone
            _check_bindable(host, number, api)
    manager = ModelManager(model_name, model_base_path, num_versions, max_num_load_retries, load_retry_interval_s)
    manager.poll()
    manager.start_polling(poll_seconds)
    scheduler = BatchScheduler(max_batch_size, batch_timeout_ms / 1000.0, num_batch_threads or os.cpu_count() or 1)
    core = ModelServerCore({model_name: manager}, scheduler)
    max_bytes = int(max_message_mb * 1024 * 1024)
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),  # a port another server holds is an error, not shared with it
        ],
    )
    add_services(server, core)
    try:
        bound = _bind_grpc(server, host, port)
        http_server = None
        if rest_port is not None:
            http_server = RestServer((host, rest_port), core, max_bytes, rest_max_connections, rest_idle_timeout_s)
    except OSError:  # a port taken: stop the threads started, the caller's process goes on
        server.stop(None)
        manager.stop_polling()
        scheduler.close()
        raise
    server.start()
    if http_server is not None:
        http_server.start()
        rest_port = http_server.server_address[1]
    logger.info(
        "serving model %s (versions %s) from %s: gRPC on %s:%d%s",
        model_name,
        manager.versions(),
        model_base_path,
        host,
        bound,
        f", REST on {host}:{rest_port}" if http_server else "",
    )
    return ServerHandle(host, bound, rest_port, core, server, http_server)


def _at_least(low: int):
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    """``python -m lba_tf.serving.server``: serve until SIGTERM or SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lba_tf.serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", required=True, help="directory of version directories")
    parser.add_argument("--model-name", default="lba")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--rest-port", type=int, default=None, help="REST API port (default: no REST)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument(
        "--num-batch-threads",
        type=int,
        default=None,
        help="threads running merged batches (default: the number of CPU cores)",
    )
    parser.add_argument(
        "--max-message-mb",
        type=_at_least(1),
        default=64,
        help="largest gRPC message and REST body, in MiB; a larger REST body is answered 413 (default: 64)",
    )
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--num-versions", type=_at_least(1), default=2, help="highest versions kept loaded")
    parser.add_argument(
        "--max-num-load-retries",
        "--max_num_load_retries",
        type=_at_least(0),
        metavar="N",
        default=5,
        help="retries of a version that failed to load, as TF Serving's flag; 0: one attempt (default: 5)",
    )
    parser.add_argument(
        "--load-retry-interval-micros",
        "--load_retry_interval_micros",
        type=int,
        metavar="MICROS",
        default=60_000_000,
        help="microseconds between those retries, as TF Serving's flag; negative: no wait (default: 1 minute)",
    )
    parser.add_argument(
        "--rest-max-connections",
        type=_at_least(1),
        default=64,
        help="REST connections served at once; one more is answered 503 and closed (default: 64)",
    )
    parser.add_argument(
        "--rest-idle-timeout-s",
        type=float,
        default=30.0,
        help="seconds a silent REST connection (between requests or within one) stays open (default: 30)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        tune_allocator()  # before setup_logging loads TensorFlow
        setup_logging(args.verbose)
        handle = serve(
            args.model_base_path,
            args.model_name,
            port=args.port,
            host=args.host,
            rest_port=args.rest_port,
            max_batch_size=args.max_batch_size,
            batch_timeout_ms=args.batch_timeout_ms,
            num_batch_threads=args.num_batch_threads,
            max_message_mb=args.max_message_mb,
            poll_seconds=args.poll_seconds,
            num_versions=args.num_versions,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_s=max(args.load_retry_interval_micros, 0) / 1e6,
            rest_max_connections=args.rest_max_connections,
            rest_idle_timeout_s=args.rest_idle_timeout_s,
        )
    except (OSError, ValueError) as err:  # a port taken, a bad LBA_TF_MALLOC
        print(f"error: {err}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    logger.info("shutting down")
    handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
