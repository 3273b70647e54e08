"""REST predict JSON: TF Serving's bodies to PredictRequests and back, its type rules (util/json_tensor.cc)."""

import base64

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from lba_tf.serving.errors import ServingError
from lba_tf.serving.json_tensor import json_tensor, rest_predict_request, rest_predict_response

DEFAULT_SPECS = {"images": tf.TensorSpec([None, None, None, 3], tf.uint8), "modality": tf.TensorSpec([None], tf.int32)}
BYTES_SPECS = {"image_bytes": tf.TensorSpec([None], tf.string)}
SPEC = model_pb2.ModelSpec(name="lba")


def _inputs(request):
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def test_row_format_objects_become_columns():
    images = np.arange(12, dtype=np.uint8).reshape(2, 2, 1, 3)
    body = {
        "signature_name": "serving_default",
        "instances": [{"images": images[0].tolist(), "modality": 0}, {"images": images[1].tolist(), "modality": 1}],
    }
    request, row_format = rest_predict_request(
        body, model_pb2.ModelSpec(name="lba", version={"value": 3}), DEFAULT_SPECS
    )
    assert row_format
    assert (request.model_spec.name, request.model_spec.version.value, request.model_spec.signature_name) == (
        "lba",
        3,
        "serving_default",
    )
    arrays = _inputs(request)
    assert arrays["images"].dtype == np.uint8 and np.array_equal(arrays["images"], images)
    assert arrays["modality"].dtype == np.int32 and arrays["modality"].tolist() == [0, 1]


def test_row_format_values_and_b64_go_to_the_one_input():
    body = {"instances": [{"b64": base64.b64encode(b"\x89PNG").decode()}, "text", {"b64": "YWJj"}]}
    request, row_format = rest_predict_request(body, SPEC, BYTES_SPECS)
    assert row_format and not request.model_spec.HasField("version") and request.model_spec.signature_name == ""
    assert _inputs(request)["image_bytes"].tolist() == [b"\x89PNG", b"text", b"abc"]


def test_columnar_format_by_name_or_bare_and_other_keys_ignored():
    request, row_format = rest_predict_request(
        {"inputs": {"modality": [1, 0], "images": [[[[1, 2, 3]]]] * 2, "comment": "x"}}, SPEC, DEFAULT_SPECS
    )
    assert not row_format and _inputs(request)["modality"].tolist() == [1, 0]
    assert set(request.inputs) == {"images", "modality"}  # TF Serving reads only the signature's inputs
    request, _ = rest_predict_request({"inputs": [{"b64": "YWJj"}]}, SPEC, BYTES_SPECS)
    assert _inputs(request)["image_bytes"].tolist() == [b"abc"]


@pytest.mark.parametrize(
    "value, dtype, want",
    [
        ([1, 2], tf.int32, np.array([1, 2], np.int32)),
        ([[1.5, 2], [3, -0.25]], tf.float32, np.array([[1.5, 2], [3, -0.25]], np.float32)),
        (7, tf.int64, np.array(7, np.int64)),  # a scalar
        ([2**63 - 1], tf.int64, np.array([2**63 - 1], np.int64)),
        ([True, False], tf.bool, np.array([True, False])),
        ([], tf.int32, np.zeros([0], np.int32)),
        # uint8 takes any int32 and wraps as TensorFlow's proto-to-tensor copy does (TF Serving answers 200)
        ([255, 256, -1], tf.uint8, np.array([255, 0, 255], np.uint8)),
    ],
)
def test_json_values_of_the_expected_type_convert(value, dtype, want):
    got = json_tensor(value, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize(
    "value, dtype, message",
    [
        # integer inputs take JSON integers only: RapidJSON's IsInt() is false for 1.7 and for 1.0
        ([0, 1.7], tf.int32, "JSON Value: 1.7 Type: Number is not of expected type: int32"),
        ([1.0], tf.int32, "JSON Value: 1.0 Type: Number is not of expected type: int32"),
        ([[[1.5, 2, 3]]], tf.uint8, "JSON Value: 1.5 Type: Number is not of expected type: uint8"),
        ([True], tf.int32, "JSON Value: true Type: True is not of expected type: int32"),
        (["1"], tf.int32, 'JSON Value: "1" Type: String is not of expected type: int32'),
        ([2**31], tf.int32, "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        ([-1], tf.uint32, "JSON Value: -1 Type: Number is not of expected type: uint32"),
        ([None], tf.float32, "JSON Value: null Type: Null is not of expected type: float"),
        ([1], tf.bool, "JSON Value: 1 Type: Number is not of expected type: bool"),
        ([3], tf.string, "JSON Value: 3 Type: Number is not of expected type: string"),
        (
            [{"b64": "YQ==", "x": 1}],
            tf.string,
            'JSON Value: {"b64":"YQ==","x":1} not formatted correctly for base64 data',
        ),
        ([{"b64": "!!"}], tf.string, "Unable to base64 decode"),
        ([[1, 2], [3]], tf.int32, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ([[1, 2], 3], tf.int32, "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ([1, [2]], tf.int32, "Encountered list at unexpected level: 1 expected < 1"),
    ],
)
def test_json_values_of_another_type_are_invalid_argument(value, dtype, message):
    with pytest.raises(ServingError) as info:
        json_tensor(value, dtype)
    assert (info.value.code, info.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_a_dtype_json_cannot_express_is_unimplemented():
    with pytest.raises(ServingError) as info:
        json_tensor([1.0], tf.float16)
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Conversion of JSON Value: [1.0] to type: half",
    )


BAD_BODIES = {
    "neither instances nor inputs": ({}, DEFAULT_SPECS, "Missing 'inputs' or 'instances' key"),
    "both": (
        {"instances": [], "inputs": {}},
        DEFAULT_SPECS,
        "expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    "instances not a list": ({"instances": {"images": []}}, DEFAULT_SPECS, "Expecting 'instances' to be an list/array"),
    "no instances": ({"instances": []}, DEFAULT_SPECS, "No values in 'instances' array"),
    "bare values for two inputs": ({"instances": [1, 2]}, DEFAULT_SPECS, "instances is a plain list, but expecting"),
    "an object among values": ({"instances": ["a", {"x": "b"}]}, BYTES_SPECS, "got object at item 1 of input list"),
    "a value among objects": (
        {"instances": [{"images": [], "modality": 0}, 1]},
        DEFAULT_SPECS,
        "Expecting object but got list at item 1 of input list",
    ),
    "unknown key in an instance": (
        {"instances": [{"images": [[[1, 2, 3]]], "modality": 0, "pixels": 1}]},
        DEFAULT_SPECS,
        "Failed to process element: 0 key: pixels of 'instances' list. Error: JSON object: does not have named input",
    ),
    "missing key in an instance": (
        {"instances": [{"images": [[[1, 2, 3]]]}]},
        DEFAULT_SPECS,
        "keys must be equal to: images,modality",
    ),
    "bare inputs for two": ({"inputs": [1]}, DEFAULT_SPECS, "inputs is a plain value/list, but expecting an object"),
    "missing named input": ({"inputs": {"images": [[[[1, 2, 3]]]]}}, DEFAULT_SPECS, "Missing named input: modality"),
    "modality 1.7": (
        {"inputs": {"images": [[[[1, 2, 3]]]], "modality": [1.7]}},
        DEFAULT_SPECS,
        "input modality: JSON Value: 1.7 Type: Number is not of expected type: int32",
    ),
    "pixel 1.5": (
        {"instances": [{"images": [[[1.5, 2, 3]]], "modality": 1}]},
        DEFAULT_SPECS,
        "input images: JSON Value: 1.5 Type: Number is not of expected type: uint8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_is_invalid_argument_naming_the_input(case):
    body, specs, message = BAD_BODIES[case]
    with pytest.raises(ServingError) as info:
        rest_predict_request(body, SPEC, specs)
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
