"""Every refusal of the gRPC and REST APIs against a running server: the gRPC code and HTTP status TF Serving gives.

Each row names the TF Serving source (tensorflow/serving) the expected status comes from.
"""

import http.client
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from lba_tf.serving.rest_api import HTTP_STATUS

PIXELS = np.random.default_rng(5).integers(0, 256, (2, 20, 10, 3), np.uint8)
CODE = grpc.StatusCode


def _predict(signature="embed_visible", inputs=None, spec=None, output_filter=()):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name, request.model_spec.signature_name = "lba", signature
    for name, value in ({"images": PIXELS} if inputs is None else inputs).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    for field, value in (spec or {}).items():
        if field == "version":
            request.model_spec.version.value = value
        elif value is None:
            request.ClearField("model_spec")
        else:
            setattr(request.model_spec, field, value)
    return "Predict", request


def _metadata(fields=("signature_def",), name="lba", version=None, spec=True):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    if spec:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return "GetModelMetadata", request


def _status(name="lba", version=None, spec=True):
    request = get_model_status_pb2.GetModelStatusRequest()
    if spec:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return "GetModelStatus", request


GRPC_REFUSALS = {
    # condition: (call, code, source)
    "Predict without model_spec": (_predict(spec={"model_spec": None}), CODE.INVALID_ARGUMENT, "predict_impl.cc"),
    "Predict without a model name": (_predict(spec={"name": ""}), CODE.INVALID_ARGUMENT, "server_core.cc"),
    "Predict of an unknown model": (_predict(spec={"name": "resnet"}), CODE.NOT_FOUND, "basic_manager.cc"),
    "Predict of a version not loaded": (_predict(spec={"version": 9}), CODE.NOT_FOUND, "basic_manager.cc"),
    "Predict with a version label": (
        _predict(spec={"version_label": "stable"}),
        CODE.INVALID_ARGUMENT,
        "server_core.cc",
    ),
    "Predict of an unknown signature": (_predict("embed_thermal"), CODE.FAILED_PRECONDITION, "predict_util.cc"),
    "Predict with an input too many": (
        _predict(inputs={"images": PIXELS, "modality": np.zeros(2, np.int32)}),
        CODE.INVALID_ARGUMENT,
        "predict_util.cc",
    ),
    "Predict with an input missing": (_predict("serving_default"), CODE.INVALID_ARGUMENT, "predict_util.cc"),
    "Predict with an unknown input name": (
        _predict(inputs={"image": PIXELS}),
        CODE.INVALID_ARGUMENT,
        "TensorFlow saved_model GetInputValues",
    ),
    "Predict with a wrong dtype": (
        _predict(inputs={"images": PIXELS.astype(np.float32)}),
        CODE.INVALID_ARGUMENT,
        "TensorFlow Session::Run",
    ),
    "Predict of an unknown output": (_predict(output_filter=["logits"]), CODE.INVALID_ARGUMENT, "predict_util.cc"),
    "Predict of an output twice": (
        _predict(output_filter=["embedding", "embedding"]),
        CODE.INVALID_ARGUMENT,
        "predict_util.cc",
    ),
    "Predict of an undecodable image": (
        _predict("embed_visible_bytes", {"image_bytes": np.array([b"not an image"], object)}),
        CODE.INVALID_ARGUMENT,
        "TensorFlow DecodeImage",
    ),
    "GetModelMetadata without model_spec": (_metadata(spec=False), CODE.INVALID_ARGUMENT, "get_model_metadata_impl.cc"),
    "GetModelMetadata without fields": (_metadata(fields=()), CODE.INVALID_ARGUMENT, "get_model_metadata_impl.cc"),
    "GetModelMetadata of another field": (
        _metadata(fields=("signature_def", "labels")),
        CODE.INVALID_ARGUMENT,
        "get_model_metadata_impl.cc",
    ),
    "GetModelMetadata of an unknown model": (_metadata(name="resnet"), CODE.NOT_FOUND, "basic_manager.cc"),
    "GetModelMetadata of a version not loaded": (_metadata(version=9), CODE.NOT_FOUND, "basic_manager.cc"),
    "GetModelStatus without model_spec": (_status(spec=False), CODE.INVALID_ARGUMENT, "get_model_status_impl.cc"),
    "GetModelStatus of an unknown model": (_status(name="resnet"), CODE.NOT_FOUND, "get_model_status_impl.cc"),
    "GetModelStatus of an unknown version": (_status(version=9), CODE.NOT_FOUND, "get_model_status_impl.cc"),
}


@pytest.mark.parametrize("condition", sorted(GRPC_REFUSALS))
def test_grpc_refusal_has_tf_servings_code(stub, model_stub, condition):
    (method, request), code, _ = GRPC_REFUSALS[condition]
    call = getattr(model_stub if method == "GetModelStatus" else stub, method)
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == code, info.value.details()


def _row(images=None, modality=0):
    return {"images": PIXELS[0].tolist() if images is None else images, "modality": modality}


REST_REFUSALS = {
    # condition: (method, path, body, gRPC code behind it or None, HTTP status, source)
    "a path outside /v1/": ("GET", "/v2/models/lba", None, None, 404, "evhttp_server.cc: no handler"),
    "a malformed /v1/ path": (
        "GET",
        "/v1/models/lba:predict",
        None,
        CODE.INVALID_ARGUMENT,
        400,
        "http_rest_api_handler.cc",
    ),
    "a method other than GET and POST": (
        "PUT",
        "/v1/models/lba",
        None,
        CODE.INVALID_ARGUMENT,
        400,
        "http_rest_api_handler.cc",
    ),
    "status without a model name": ("GET", "/v1/models", None, CODE.INVALID_ARGUMENT, 400, "http_rest_api_handler.cc"),
    "status of an unknown model": ("GET", "/v1/models/resnet", None, CODE.NOT_FOUND, 404, "get_model_status_impl.cc"),
    "status of an unknown version": (
        "GET",
        "/v1/models/lba/versions/9",
        None,
        CODE.NOT_FOUND,
        404,
        "get_model_status_impl.cc",
    ),
    "metadata of a version not loaded": (
        "GET",
        "/v1/models/lba/versions/9/metadata",
        None,
        CODE.NOT_FOUND,
        404,
        "basic_manager.cc",
    ),
    "metadata by a version label": (
        "GET",
        "/v1/models/lba/labels/stable/metadata",
        None,
        CODE.INVALID_ARGUMENT,
        400,
        "server_core.cc",
    ),
    "predict of an unknown model": (
        "POST",
        "/v1/models/resnet:predict",
        {"instances": [_row()]},
        CODE.NOT_FOUND,
        404,
        "basic_manager.cc",
    ),
    "predict by a version label": (
        "POST",
        "/v1/models/lba/labels/stable:predict",
        {"instances": [_row()]},
        CODE.INVALID_ARGUMENT,
        400,
        "server_core.cc",
    ),
    "predict of an unknown signature": (
        "POST",
        "/v1/models/lba:predict",
        {"signature_name": "embed_thermal", "instances": [_row()]},
        CODE.INVALID_ARGUMENT,
        400,
        "http_rest_api_handler.cc GetInfoMap",
    ),
    "predict with modality 1.7": (
        "POST",
        "/v1/models/lba:predict",
        {"instances": [_row(modality=1.7)]},
        CODE.INVALID_ARGUMENT,
        400,
        "json_tensor.cc",
    ),
    "predict with modality 1.0": (
        "POST",
        "/v1/models/lba:predict",
        {"instances": [_row(modality=1.0)]},
        CODE.INVALID_ARGUMENT,
        400,
        "json_tensor.cc",
    ),
    "predict with pixel 1.5": (
        "POST",
        "/v1/models/lba:predict",
        {"inputs": {"images": [[[[1.5, 2, 3]]]], "modality": [1]}},
        CODE.INVALID_ARGUMENT,
        400,
        "json_tensor.cc",
    ),
    "predict with an image of 4 channels": (
        "POST",
        "/v1/models/lba:predict",
        {"signature_name": "embed_visible", "instances": [[[[1, 2, 3, 4]]]]},
        CODE.INVALID_ARGUMENT,
        400,
        "TensorFlow Session::Run",
    ),
    "predict with a body that is not JSON": (
        "POST",
        "/v1/models/lba:predict",
        b"{",
        CODE.INVALID_ARGUMENT,
        400,
        "json_tensor.cc",
    ),
}


def _rest(server, method, path, body):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request(method, path, body=data)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("condition", sorted(REST_REFUSALS))
def test_rest_refusal_has_tf_servings_http_status(server, condition):
    method, path, body, code, status, _ = REST_REFUSALS[condition]
    got, answer = _rest(server, method, path, body)
    assert (got, list(answer)) == (status, ["error"]), answer
    if code is not None:
        assert HTTP_STATUS[code] == status


def test_http_status_of_each_grpc_code_is_tf_servings():
    # model_servers/http_server.cc ToHTTPStatusCode
    assert {code.name: status for code, status in HTTP_STATUS.items()} == {
        "OK": 200,
        "CANCELLED": 499,
        "UNKNOWN": 500,
        "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "ABORTED": 409,
        "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DATA_LOSS": 500,
        "UNAUTHENTICATED": 401,
    }
