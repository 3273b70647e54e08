"""REST front end: TF Serving's JSON bodies to PredictRequests and back, routes and errors over HTTP."""

import base64
import http.client
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from lba_tf.serving.errors import ServingError
from lba_tf.serving.rest_api import RestServer, rest_predict_request, rest_predict_response

DEFAULT_SPECS = {"images": tf.TensorSpec([None, None, None, 3], tf.uint8), "modality": tf.TensorSpec([None], tf.int32)}
BYTES_SPECS = {"image_bytes": tf.TensorSpec([None], tf.string)}


def _inputs(request):
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def test_row_format_objects_become_columns():
    images = np.zeros((2, 2, 1, 3), np.uint8)
    body = {
        "signature_name": "serving_default",
        "instances": [{"images": images[0].tolist(), "modality": 0}, {"images": images[1].tolist(), "modality": 1}],
    }
    request, row_format = rest_predict_request(body, "lba", 3, DEFAULT_SPECS)
    assert row_format
    assert (request.model_spec.name, request.model_spec.version.value, request.model_spec.signature_name) == (
        "lba",
        3,
        "serving_default",
    )
    arrays = _inputs(request)
    assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (2, 2, 1, 3)
    assert arrays["modality"].dtype == np.int32 and arrays["modality"].tolist() == [0, 1]


def test_row_format_values_and_b64_go_to_the_one_input():
    body = {"instances": [{"b64": base64.b64encode(b"\x89PNG").decode()}, "text"]}
    request, row_format = rest_predict_request(body, "lba", None, BYTES_SPECS)
    assert row_format and not request.model_spec.HasField("version") and request.model_spec.signature_name == ""
    assert _inputs(request)["image_bytes"].tolist() == [b"\x89PNG", b"text"]


def test_columnar_format_by_name_or_bare():
    request, row_format = rest_predict_request(
        {"inputs": {"modality": [1, 0], "images": [[[[1, 2, 3]]]] * 2}}, "lba", None, DEFAULT_SPECS
    )
    assert not row_format and _inputs(request)["modality"].tolist() == [1, 0]
    request, _ = rest_predict_request(
        {"inputs": [{"b64": base64.b64encode(b"abc").decode()}]}, "lba", None, BYTES_SPECS
    )
    assert _inputs(request)["image_bytes"].tolist() == [b"abc"]


BAD_BODIES = {
    "neither instances nor inputs": ({}, DEFAULT_SPECS, 'exactly one of "instances" or "inputs"'),
    "both": ({"instances": [], "inputs": {}}, DEFAULT_SPECS, 'exactly one of "instances" or "inputs"'),
    "instances not a list": ({"instances": {"images": []}}, DEFAULT_SPECS, '"instances" must be a list'),
    "bare values for two inputs": ({"instances": [1, 2]}, DEFAULT_SPECS, "each instance must be an object"),
    "unknown input": ({"inputs": {"pixels": [1]}}, DEFAULT_SPECS, "input tensor alias not found in signature: pixels"),
    "number for bytes": ({"instances": [3]}, BYTES_SPECS, "input image_bytes: expected a string"),
    "out of range": ({"inputs": {"modality": [2**40], "images": []}}, DEFAULT_SPECS, "input modality:"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_is_invalid_argument(case):
    body, specs, message = BAD_BODIES[case]
    with pytest.raises(ServingError) as info:
        rest_predict_request(body, "lba", None, specs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.message


def _response(**outputs):
    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))
    return response


def test_response_as_rows_or_columns():
    one = _response(embedding=[[1, 0], [0, 1]])
    assert rest_predict_response(one, row_format=True) == {"predictions": [[1, 0], [0, 1]]}
    assert rest_predict_response(one, row_format=False) == {"outputs": [[1, 0], [0, 1]]}
    two = _response(a=[1, 2], b=[3, 4])
    assert rest_predict_response(two, row_format=True) == {"predictions": [{"a": 1, "b": 3}, {"a": 2, "b": 4}]}
    assert rest_predict_response(two, row_format=False) == {"outputs": {"a": [1, 2], "b": [3, 4]}}


class _BrokenCore:
    """Request handling that fails as a bug would."""

    def status(self, request):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def rest_server():
    server = RestServer(("127.0.0.1", 0), _BrokenCore(), max_body_bytes=64)
    server.start()
    yield server
    server.shutdown()
    server.server_close()


def _call(server, method, path, body=b""):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Length": str(len(body))})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("GET", "/v2/models/lba", b"", 404, "Malformed request: GET /v2/models/lba"),
        ("GET", "/v1/models/lba:predict", b"", 404, "Malformed request: GET /v1/models/lba:predict"),
        ("POST", "/v1/models/lba/metadata", b"{}", 404, "Malformed request: POST /v1/models/lba/metadata"),
        ("POST", "/v1/models/lba:predict", b"x" * 65, 400, "request body of 65 bytes exceeds 64"),
        ("POST", "/v1/models/lba:predict", b"{not json", 400, "JSON Parse error"),
        ("POST", "/v1/models/lba:predict", b"[1, 2]", 400, "JSON Value is not an object"),
        ("GET", "/v1/models/lba", b"", 500, "RuntimeError: boom"),
    ],
)
def test_routes_and_bodies_refused_with_http_status(rest_server, method, path, body, status, message):
    got_status, got_body = _call(rest_server, method, path, body)
    assert got_status == status and list(got_body) == ["error"]
    assert got_body["error"].startswith(message)


def test_taken_port_names_the_address(rest_server):
    port = rest_server.server_address[1]
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port} for REST"):
        RestServer(("127.0.0.1", port), _BrokenCore(), max_body_bytes=64)
