"""TF Serving's REST API over the request handling: predict, metadata and status as JSON over HTTP."""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
from collections.abc import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from lba_tf.log import logger
from lba_tf.serving.core import ModelServerCore
from lba_tf.serving.errors import ServingError, invalid_argument
from lba_tf.serving.servable import DEFAULT_SIGNATURE

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
}
_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<verb>:predict|/metadata)?$"
)


def _json_bytes(value):
    """A JSON string, ``{"b64": ...}`` or nested list of them -> bytes (nested lists of bytes)."""
    if isinstance(value, list):
        return [_json_bytes(v) for v in value]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f'expected a string or {{"b64": ...}}, got {type(value).__name__}')


def _json_column(values, spec: tf.TensorSpec) -> np.ndarray:
    """A JSON batch of one input -> numpy of the signature's dtype (``{"b64": ...}`` for bytes)."""
    if spec.dtype == tf.string:
        return np.array(_json_bytes(values), dtype=object)
    return np.asarray(values, dtype=spec.dtype.as_numpy_dtype)


def rest_predict_request(
    body: dict, name: str, version: int | None, specs: Mapping[str, tf.TensorSpec]
) -> tuple[predict_pb2.PredictRequest, bool]:
    """TF Serving's REST predict body -> a PredictRequest (and whether it used the row format).

    Args:
        body: ``{"signature_name"?, "instances": [...]}`` (row format: one entry per example, a
            value when the signature has one input, else ``{input: value}``) or
            ``{"signature_name"?, "inputs": {input: batch} | batch}`` (columnar format).
        name: model name from the URL.
        version: version from the URL, or ``None``.
        specs: the signature's inputs by name.
    """
    if ("instances" in body) == ("inputs" in body):
        raise invalid_argument('JSON object must have exactly one of "instances" or "inputs"')
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument('"instances" must be a list')
        if all(isinstance(item, dict) and "b64" not in item for item in instances) and instances:
            columns = {key: [item.get(key) for item in instances] for key in instances[0]}
        elif len(specs) == 1:
            columns = {next(iter(specs)): instances}
        else:
            raise invalid_argument("with several inputs, each instance must be an object {input: value}")
    else:
        inputs = body["inputs"]
        columns = inputs if isinstance(inputs, dict) and "b64" not in inputs else {next(iter(specs)): inputs}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = body.get("signature_name", "")
    if version is not None:
        request.model_spec.version.value = version
    for key, values in columns.items():
        if key not in specs:
            raise invalid_argument(f"input tensor alias not found in signature: {key}")
        try:
            array = _json_column(values, specs[key])
        except (ValueError, TypeError, OverflowError) as err:
            raise invalid_argument(f"input {key}: {err}") from None
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    return request, row_format


def rest_predict_response(response: predict_pb2.PredictResponse, row_format: bool) -> dict:
    """A PredictResponse as TF Serving's REST JSON (``predictions`` rows or ``outputs`` columns)."""
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    if row_format:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        size = len(next(iter(outputs.values())))
        return {"predictions": [{name: value[i].tolist() for name, value in outputs.items()} for i in range(size)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values())).tolist()}
    return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def _to_json(message) -> dict:
    """A proto as TF Serving's REST API writes it: proto field names, default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestServer(http.server.ThreadingHTTPServer):
    """An HTTP server of TF Serving's REST routes, answering with ``core``; one thread per request.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one (see ``server_address``).
        core: the request handling.
        max_body_bytes: largest predict body accepted.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], core: ModelServerCore, max_body_bytes: int):
        try:
            super().__init__(address, RestHandler)
        except OSError as err:
            raise OSError(f"cannot bind {address[0]}:{address[1]} for REST: {err.strerror or err}") from None
        self.core, self.max_body_bytes = core, max_body_bytes

    def start(self) -> None:
        """Serve in a background thread until ``shutdown()``."""
        threading.Thread(target=self.serve_forever, name="rest", daemon=True).start()


class RestHandler(http.server.BaseHTTPRequestHandler):
    """One HTTP request to a ``RestServer``, answered as TF Serving's REST API answers it.

    Routes: ``GET /v1/models/<name>[/versions/<n>]`` (status), ``GET .../metadata`` and
    ``POST .../models/<name>[/versions/<n>]:predict``; errors are ``{"error": message}``.
    """

    protocol_version = "HTTP/1.1"
    server: RestServer

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        logger.debug("rest: " + format, *args)

    def do_GET(self):
        self._handle(self._get)

    def do_POST(self):
        self._handle(self._post)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: Callable[[], dict]) -> None:
        try:
            self._send(200, method())
        except ServingError as err:
            self._send(_HTTP_STATUS.get(err.code, 500), {"error": err.message})
        except Exception as err:
            logger.exception("rest request failed")
            self._send(500, {"error": f"{type(err).__name__}: {err}"})

    def _route(self) -> tuple[str, int | None, str | None]:
        match = _REST_PATH.match(self.path)
        if match is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {self.path}")
        version = int(match["version"]) if match["version"] else None
        return match["name"], version, match["verb"]

    @staticmethod
    def _spec(name: str, version: int | None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = version
        return spec

    def _get(self) -> dict:
        name, version, verb = self._route()
        spec = self._spec(name, version)
        if verb == "/metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
            response = self.server.core.metadata(request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            return {"model_spec": _to_json(response.model_spec), "metadata": {"signature_def": _to_json(signature_map)}}
        if verb is None:
            response = self.server.core.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
            return _to_json(response)
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: GET {self.path}")

    def _post(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body_bytes = self.rfile.read(length)  # read even when refusing, to keep the connection sane
        name, version, verb = self._route()
        if verb != ":predict":
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {self.path}")
        if length > self.server.max_body_bytes:
            raise invalid_argument(f"request body of {length} bytes exceeds {self.server.max_body_bytes}")
        try:
            body = json.loads(body_bytes)
        except ValueError as err:
            raise invalid_argument(f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise invalid_argument("JSON Value is not an object")
        _, servable = self.server.core.resolve(self._spec(name, version))
        signature = body.get("signature_name") or DEFAULT_SIGNATURE
        request, row_format = rest_predict_request(body, name, version, servable.input_specs(signature))
        return rest_predict_response(self.server.core.predict(request), row_format)
