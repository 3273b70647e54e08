"""TF Serving's REST API over the request handling: predict, metadata and status as JSON over HTTP."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import urllib.parse

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from lba_tf.log import logger
from lba_tf.serving.core import ModelServerCore
from lba_tf.serving.errors import ServingError, bind_error, invalid_argument
from lba_tf.serving.http_body import HttpRefusal, declared_length, read_body
from lba_tf.serving.json_tensor import rest_predict_request, rest_predict_response
from lba_tf.serving.servable import DEFAULT_SIGNATURE

HTTP_STATUS = {
    # model_servers/http_server.cc ToHTTPStatusCode; a code not listed is 500
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
"""The HTTP status TF Serving's REST API gives for each gRPC code."""

# the routes of model_servers/http_rest_api_util.cc (RE2 with (?i): case-insensitive, whole path)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.IGNORECASE
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.IGNORECASE
)


def _to_json(message) -> dict:
    """A proto as TF Serving's REST API writes it: proto field names, default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    """The ModelSpec of a URL's parts, as ``ParseModelInfo`` and ``FillModelSpecWithNameVersionAndLabel``."""
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None:
        if int(version) >= 2**63:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


class RestServer(http.server.ThreadingHTTPServer):
    """An HTTP server of TF Serving's REST routes, answering with ``core``; one thread per connection.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one (see ``server_address``).
        core: the request handling.
        max_body_bytes: largest request body; a larger one is refused by its headers (413).
        max_connections: connections served at once; one more is answered 503 and closed.
        idle_timeout_s: a connection silent this long (between requests, or mid-request) is closed.

    Raises:
        PortError: ``address`` cannot be bound.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        core: ModelServerCore,
        max_body_bytes: int,
        max_connections: int = 64,
        idle_timeout_s: float = 30.0,
    ):
        try:
            super().__init__(address, RestHandler)
        except OSError as err:
            raise bind_error(address[0], address[1], "REST", err) from None
        self.core, self.max_body_bytes, self.idle_timeout_s = core, max_body_bytes, idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)

    def start(self) -> None:
        """Serve in a background thread until ``shutdown()``."""
        threading.Thread(target=self.serve_forever, name="rest", daemon=True).start()

    def process_request(self, request: socket.socket, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_connection(request, "too many connections; try again later")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """A connection that broke (reset by the client, a write timing out): logged, not printed."""
        logger.debug("rest: connection from %s failed", client_address, exc_info=True)

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse_connection(sock: socket.socket, message: str) -> None:
    """Answer 503 on a connection not served, without waiting on the client."""
    data = json.dumps({"error": message}).encode()
    head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536, socket.MSG_DONTWAIT):  # what already arrived: closing on unread bytes resets
            pass
    except OSError:
        pass  # nothing more to read now, or the client is gone: it loses nothing it would have read


class RestHandler(http.server.BaseHTTPRequestHandler):
    """The requests of one connection to a ``RestServer``, answered as TF Serving's REST API answers them.

    Routes: ``GET /v1/models/<name>[/versions/<n>|/labels/<l>]`` (status), ``GET .../metadata``
    and ``POST /v1/models/<name>[/versions/<n>|/labels/<l>]:predict``; errors are
    ``{"error": message}`` with the HTTP status of their gRPC code (:data:`HTTP_STATUS`).
    """

    protocol_version = "HTTP/1.1"
    server: RestServer

    def setup(self):
        self.timeout = self.server.idle_timeout_s  # applied to the socket by StreamRequestHandler.setup
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        logger.debug("rest: " + format, *args)

    def handle_expect_100(self):
        """``Expect: 100-continue``: refuse an oversized body before the client sends it (as libevent)."""
        try:
            declared_length(self.headers, self.server.max_body_bytes)
        except HttpRefusal as refusal:
            self._refuse(refusal)
            return False
        return super().handle_expect_100()

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # in /v1/: "Malformed request" (400), as TF Serving

    def do_OPTIONS(self):
        """A CORS preflight: 200 with an Origin header, else FAILED_PRECONDITION (model_servers/http_server.cc)."""
        if self._read_body_or_refuse() is None:
            return
        if re.search(r"https?://", self.headers.get("Origin", "")):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(400, {"error": "Origin header is missing in CORS preflight"})

    def _send(self, status: int, payload: dict, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, refusal: HttpRefusal) -> None:
        """Answer ``refusal`` and close: the rest of the body, unread, cannot be told from the next request."""
        self._send(refusal.status, {"error": refusal.message}, close=True)
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(16):  # linger a little, so that the client reads the answer before the close
                if not self.connection.recv(64 * 1024):
                    break
        except OSError:
            pass

    def _read_body_or_refuse(self) -> bytearray | None:
        """The request body, or ``None`` when it was refused (answered) or stopped arriving (closed)."""
        try:
            return read_body(self.rfile, self.headers, self.server.max_body_bytes)
        except HttpRefusal as refusal:
            self._refuse(refusal)
        except TimeoutError:  # the client stopped sending mid-body
            self.close_connection = True
        return None

    def _handle(self) -> None:
        # the whole body first, as TF Serving's server (libevent) reads it before any routing
        body = self._read_body_or_refuse()
        if body is None:
            return
        try:
            self._send(200, self._answer(body))
        except ServingError as err:
            self._send(HTTP_STATUS.get(err.code, 500), {"error": err.message})
        except Exception as err:
            logger.exception("rest request failed")
            self._send(500, {"error": f"{type(err).__name__}: {err}"})

    def _answer(self, body: bytearray) -> dict:
        path = urllib.parse.urlsplit(self.path).path
        if not _API_PATH.fullmatch(path):  # no handler in TF Serving: its HTTP server answers 404
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {path} (TF Serving's REST API is under /v1/)")
        malformed = invalid_argument(f"Malformed request: {self.command} {path}")
        if self.command == "POST":
            match = _PREDICT_PATH.fullmatch(path)
            if match is None:
                raise malformed
            spec = _model_spec(*match.group(1, 2, 3))
            if match[4] == "predict":
                return self._predict(spec, body)
            if match[4] in ("classify", "regress"):
                raise invalid_argument(f"{match[4]} needs a {match[4]} signature; this model has predict signatures")
            raise malformed  # ":PREDICT": matched case-insensitively, compared exactly
        if self.command == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if match is None:
                raise malformed
            if not match[1]:
                raise invalid_argument("Missing model name in request.")
            spec = _model_spec(*match.group(1, 2, 3))
            if match[4] == "metadata":
                return self._metadata(spec)
            return _to_json(self.server.core.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec)))
        raise malformed

    def _metadata(self, spec: model_pb2.ModelSpec) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.server.core.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": _to_json(response.model_spec), "metadata": {"signature_def": _to_json(signature_map)}}

    def _predict(self, spec: model_pb2.ModelSpec, data: bytearray) -> dict:
        """The steps of TF Serving's ``ProcessPredictRequest``, in its order."""
        if not data:
            raise invalid_argument("JSON Parse error: The document is empty")
        try:
            body = json.loads(data)
        except RecursionError:
            raise invalid_argument("JSON Parse error: nested too deeply") from None
        except ValueError as err:
            at = f" at offset: {err.pos}" if isinstance(err, json.JSONDecodeError) else ""
            raise invalid_argument(f"JSON Parse error: {getattr(err, 'msg', err)}{at}") from None
        if not isinstance(body, dict):
            raise invalid_argument(f"JSON Value: {json.dumps(body)[:80]} Is not object")
        if not isinstance(body.get("signature_name", ""), str):
            raise invalid_argument(
                f"JSON Value: {json.dumps(body)[:80]} not formatted correctly. "
                "'signature_name' key must be a string value."
            )
        _, servable = self.server.core.resolve(spec)
        signature = body.get("signature_name") or DEFAULT_SIGNATURE
        if signature not in servable.signatures:  # REST's own check (HttpRestApiHandler::GetInfoMap)
            raise invalid_argument(f'Serving signature name: "{signature}" not found in signature def')
        request, row_format = rest_predict_request(body, spec, servable.input_specs(signature))
        return rest_predict_response(self.server.core.predict(request), row_format)
