"""REST front end over HTTP: routes and refusals as TF Serving's, bodies capped by their headers, few connections."""

import http.client
import json
import socket

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from lba_tf.serving.errors import PortError, ServingError
from lba_tf.serving.rest_api import RestServer

MAX_BODY = 64


class _Core:
    """Request handling that records the ModelSpec of a status request, breaks for model "boom",
    and knows no model to predict with (so a body that parses ends in NOT_FOUND)."""

    def __init__(self):
        self.specs = []

    def status(self, request):
        self.specs.append(request.model_spec)
        if request.model_spec.name == "boom":
            raise RuntimeError("boom")
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[{"version": 1, "state": "AVAILABLE"}])

    def resolve(self, model_spec):
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({model_spec.name})")


def _start(**options):
    server = RestServer(("127.0.0.1", 0), _Core(), max_body_bytes=options.pop("max_body_bytes", MAX_BODY), **options)
    server.start()
    return server


def _stop(server):
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rest_server():
    server = _start()
    yield server
    _stop(server)


def _call(server, method, path, body=b""):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Length": str(len(body))})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        # model_servers/http_rest_api_handler.cc and http_rest_api_util.cc; a path outside /v1/ has no handler (404)
        ("GET", "/v2/models/lba", b"", 404, "Not found: /v2/models/lba"),
        ("GET", "/v1/models/lba:predict", b"", 400, "Malformed request: GET /v1/models/lba:predict"),
        ("POST", "/v1/models/lba/metadata", b"{}", 400, "Malformed request: POST /v1/models/lba/metadata"),
        ("POST", "/v1/models/lba:PREDICT", b"{}", 400, "Malformed request: POST /v1/models/lba:PREDICT"),
        ("PUT", "/v1/models/lba", b"", 400, "Malformed request: PUT /v1/models/lba"),
        ("DELETE", "/v1/models/lba", b"", 400, "Malformed request: DELETE /v1/models/lba"),
        ("GET", "/v1/models", b"", 400, "Missing model name in request."),
        ("GET", "/v1/models/lba/versions/9223372036854775808", b"", 400, "Failed to convert version"),
        ("POST", "/v1/models/lba:classify", b"{}", 400, "classify needs a classify signature"),
        ("POST", "/v1/models/lba:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("POST", "/v1/models/lba:predict", b"{not json", 400, "JSON Parse error: Expecting property name"),
        ("POST", "/v1/models/lba:predict", b"[1, 2]", 400, "JSON Value: [1, 2] Is not object"),
        (
            "POST",
            "/v1/models/lba:predict",
            b'{"signature_name": 3}',
            400,
            'JSON Value: {"signature_name": 3} not formatted',
        ),
        ("POST", "/v1/models/lba:predict", b'{"instances": [1]}', 404, "Servable not found for request: Latest(lba)"),
        ("POST", "/v1/models/lba:predict", b"x" * (MAX_BODY + 1), 413, "request body of 65 bytes exceeds the limit"),
        ("GET", "/v1/models/boom", b"", 500, "RuntimeError: boom"),
    ],
)
def test_routes_and_bodies_refused_with_http_status(rest_server, method, path, body, status, message):
    got_status, got_body = _call(rest_server, method, path, body)
    assert got_status == status and list(got_body) == ["error"]
    assert got_body["error"].startswith(message)


def test_status_route_reads_name_version_and_label(rest_server):
    for path in ("/v1/models/my%20model/versions/7", "/V1/MODELS/lba/labels/canary?x=1"):
        status, body = _call(rest_server, "GET", path)
        assert status == 200
        assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}
    first, second = rest_server.core.specs[-2:]
    assert (first.name, first.version.value) == ("my model", 7)
    assert (second.name, second.version_label) == ("lba", "canary")


def test_cors_preflight_needs_an_origin(rest_server):
    assert _call(rest_server, "OPTIONS", "/v1/models/lba") == (
        400,
        {"error": "Origin header is missing in CORS preflight"},
    )


def _raw(server, data, timeout=30):
    """Send ``data`` on a fresh connection and read until the server closes it (or ``timeout``)."""
    with socket.create_connection(server.server_address, timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def _status_and_error(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_a_body_declared_over_the_cap_is_refused_from_its_headers_alone(rest_server):
    # only the headers are sent: an answer proves the server did not wait for the gigabyte
    answer = _raw(rest_server, b"POST /v1/models/lba:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
    assert _status_and_error(answer) == (
        413,
        f"request body of 1073741824 bytes exceeds the limit of {MAX_BODY} bytes (the server's --max-message-mb)",
    )
    assert b"Connection: close" in answer


def test_expect_100_continue_is_refused_before_the_body(rest_server):
    request = (
        b"POST /v1/models/lba:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    answer = _raw(rest_server, request)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1, 2"])
def test_a_bad_content_length_is_400(rest_server, value):
    answer = _raw(
        rest_server, b"POST /v1/models/lba:predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n"
    )
    assert _status_and_error(answer)[0] == 400


def test_a_chunked_body_is_read_and_capped(rest_server):
    head = b"POST /v1/models/lba:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    answer = _raw(rest_server, head + b"2\r\n[1\r\n3\r\n, 2\r\n1\r\n]\r\n0\r\n\r\n")
    assert _status_and_error(answer) == (400, "JSON Value: [1, 2] Is not object")  # the chunks, joined and parsed
    answer = _raw(rest_server, head + b"40\r\n" + b" " * 64 + b"\r\n1\r\n")  # the 65th byte is never sent
    assert _status_and_error(answer)[0] == 413


def test_connections_over_the_cap_are_answered_503_and_the_others_served():
    server = _start(max_connections=2)
    try:
        idle = [socket.create_connection(server.server_address, timeout=30) for _ in range(2)]
        assert _status_and_error(_raw(server, b"GET /v1/models/lba HTTP/1.1\r\n\r\n")) == (
            503,
            "too many connections; try again later",
        )
        idle.pop().close()
        for _ in range(100):  # until the closed connection's slot is free again
            answer = _raw(server, b"GET /v1/models/lba HTTP/1.1\r\nConnection: close\r\n\r\n")
            if not answer.startswith(b"HTTP/1.1 503"):
                break
        assert answer.startswith(b"HTTP/1.1 200")
        idle.pop().close()
    finally:
        _stop(server)


def test_an_idle_connection_is_closed():
    server = _start(idle_timeout_s=0.2)
    try:
        assert _raw(server, b"") == b""  # nothing sent: closed without an answer
        assert _raw(server, b"POST /v1/models/lba:predict HTTP/1.1\r\nContent-Length: 10\r\n\r\n{") == b""  # mid-body
    finally:
        _stop(server)


def _vm_size_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))


def test_idle_connections_declaring_a_gigabyte_do_not_reserve_it():
    # each connection declares 1 GiB (within the cap) and sends 1 KiB: reserving the declared size
    # would add 20 GiB of address space; reading in pieces adds thread stacks and malloc arenas
    server = _start(max_body_bytes=1 << 30, max_connections=32)
    connections = []
    try:
        before = _vm_size_kib()
        for _ in range(20):
            sock = socket.create_connection(server.server_address, timeout=30)
            sock.sendall(b"POST /v1/models/lba:predict HTTP/1.1\r\nContent-Length: 1073741823\r\n\r\n" + b" " * 1024)
            connections.append(sock)
        assert (
            _status_and_error(_raw(server, b"GET /v1/models/lba/versions/x HTTP/1.1\r\nConnection: close\r\n\r\n"))[0]
            == 400
        )
        grown = _vm_size_kib() - before
        assert grown < 4 << 20, f"VmSize grew by {grown} KiB"
    finally:
        for sock in connections:
            sock.close()
        _stop(server)


def test_taken_port_names_the_address(rest_server):
    port = rest_server.server_address[1]
    with pytest.raises(PortError, match=f"port {port} is in use \\(REST on 127.0.0.1\\)"):
        RestServer(("127.0.0.1", port), _Core(), max_body_bytes=MAX_BODY)
