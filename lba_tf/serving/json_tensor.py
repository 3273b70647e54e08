"""TF Serving's REST predict JSON: request bodies to PredictRequests, PredictResponses back to JSON.

The rules are those of TF Serving's ``util/json_tensor.cc``: a value of an integer input must be
a JSON integer (``1.7`` and ``1.0`` alike are refused: RapidJSON's ``IsInt()`` is false for any
number written with a fraction or an exponent), a float input takes any number, a string input
a string or ``{"b64": ...}``; nested lists must be dense, each list of its level's size.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from lba_tf.serving.errors import ServingError, invalid_argument
from lba_tf.serving.inputs import dtype_name

_INT_RANGES = {
    # AddValueToTensor: int8, int16, int32 and uint8 take RapidJSON's IsInt() (an int32; the
    # narrower types then wrap, as TensorFlow's proto-to-tensor cast does), int64 IsInt64(), ...
    tf.int8: (-(2**31), 2**31 - 1),
    tf.int16: (-(2**31), 2**31 - 1),
    tf.int32: (-(2**31), 2**31 - 1),
    tf.uint8: (-(2**31), 2**31 - 1),
    tf.int64: (-(2**63), 2**63 - 1),
    tf.uint32: (0, 2**32 - 1),
    tf.uint64: (0, 2**64 - 1),
}
_LEAF_TYPES = {
    **{dtype: {int} for dtype in _INT_RANGES},
    tf.float32: {int, float},
    tf.float64: {int, float},
    tf.bool: {bool},
}
"""The Python types (as ``json`` parses them) each dtype's leaves may have; ``bool`` is not ``int``."""


def _leaf_ok(dtype: tf.DType) -> Callable[[object], bool]:
    """One leaf's check for ``dtype``, value by value (to find the leaf to name in a message)."""
    if dtype == tf.string:
        return lambda value: type(value) is str or _is_b64(value)
    types, (low, high) = _LEAF_TYPES[dtype], _INT_RANGES.get(dtype, (None, None))
    return lambda value: type(value) in types and (low is None or low <= value <= high)


def _numeric(leaves: list, dtype: tf.DType) -> np.ndarray | None:
    """The leaves as a wide numpy array, or None when one of them is not valid for ``dtype``.

    One pass over the leaves' types and the array's extremes instead of a check per value: this
    is the REST predict path, millions of values for a batch of images.
    """
    if not set(map(type, leaves)) <= _LEAF_TYPES[dtype]:
        return None
    if dtype not in _INT_RANGES:
        return np.array(leaves, dtype=np.float64 if dtype.is_floating else bool)
    low, high = _INT_RANGES[dtype]
    try:
        array = np.array(leaves, dtype=np.uint64 if low == 0 else np.int64)
    except OverflowError:  # beyond the wide type, so beyond the range too
        return None
    if array.size and (array.min() < low or array.max() > high):
        return None
    return array


def _debug(value) -> str:
    """A JSON value as TF Serving quotes it in messages (shortened)."""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value) -> str:
    """RapidJSON's name of a value's type, as in TF Serving's messages."""
    if value is None:
        return "Null"
    if type(value) is bool:
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value) -> bool:
    """``{"b64": "<base64>"}``, with that one key (json_tensor.cc ``IsValBase64Object``)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _is_object(value) -> bool:
    """A JSON object that is not base64 data: named tensors."""
    return type(value) is dict and not _is_b64(value)


def _dense(value) -> tuple[list[int], list]:
    """A nested JSON list -> (its shape, read along the first elements; its leaves in order).

    Raises:
        ServingError: INVALID_ARGUMENT for a list of the wrong size or a value at the wrong depth.
    """
    shape, probe = [], value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    level = [value]
    for depth, size in enumerate(shape):
        if not all(type(item) is list and len(item) == size for item in level):
            bad = next(item for item in level if type(item) is not list or len(item) != size)
            if type(bad) is not list:
                raise invalid_argument(
                    f"JSON Value: {_debug(bad)} found at incorrect level: {depth + 1} in the JSON DOM. "
                    f"Expected at level: {len(shape)}"
                )
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(bad)} at level: {depth} expected size: {size}"
            )
        level = [leaf for item in level for leaf in item]
    if any(type(leaf) is list for leaf in level):
        raise invalid_argument(f"Encountered list at unexpected level: {len(shape)} expected < {len(shape)}")
    return shape, level


def _decode(leaf) -> bytes:
    if type(leaf) is str:
        return leaf.encode()
    try:
        return base64.b64decode(leaf["b64"] + "=" * (-len(leaf["b64"]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def json_tensor(value, dtype: tf.DType) -> np.ndarray:
    """One input's JSON value (a scalar or dense nested lists) -> numpy of ``dtype``.

    Raises:
        ServingError: INVALID_ARGUMENT for a value of the wrong JSON type or ragged lists,
            UNIMPLEMENTED for a dtype JSON cannot express.
    """
    type_name = dtype_name(dtype.as_datatype_enum)
    shape, leaves = _dense(value)
    if dtype != tf.string and dtype not in _LEAF_TYPES:
        message = f"Conversion of JSON Value: {_debug(value)} to type: {type_name}"
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, message)
    check = _leaf_ok(dtype)
    if dtype == tf.string:
        array = np.array([_decode(leaf) for leaf in leaves], dtype=object) if all(map(check, leaves)) else None
    else:
        array = _numeric(leaves, dtype)
    if array is None:
        bad = next(leaf for leaf in leaves if not check(leaf))
        if dtype == tf.string and type(bad) is dict:
            raise invalid_argument(f"JSON Value: {_debug(bad)} not formatted correctly for base64 data")
        raise invalid_argument(
            f"JSON Value: {_debug(bad)} Type: {_json_type(bad)} is not of expected type: {type_name}"
        )
    return array.reshape(shape) if dtype == tf.string else array.astype(dtype.as_numpy_dtype).reshape(shape)


def _row_columns(instances: list, specs: Mapping[str, tf.TensorSpec]) -> dict[str, list]:
    """The ``instances`` list (one entry per example) -> one list per input."""
    names = sorted(specs)
    if not _is_object(instances[0]):
        if len(specs) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        for i, item in enumerate(instances):
            if _is_object(item):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: instances}
    columns = {name: [] for name in names}
    for i, item in enumerate(instances):
        if not _is_object(item):
            raise invalid_argument(f"Expecting object but got list at item {i} of input list")
        for key in item:
            if key not in specs:
                raise invalid_argument(
                    f"Failed to process element: {i} key: {key} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {key}"
                )
        if sorted(item) != names:
            raise invalid_argument(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_debug(item)} "
                f"keys must be equal to: {','.join(names)}"
            )
        for name in names:
            columns[name].append(item[name])
    return columns


def _columnar_columns(inputs, specs: Mapping[str, tf.TensorSpec]) -> dict:
    """The ``inputs`` value (a batch per input) -> the batch of each input; other keys are ignored."""
    if not _is_object(inputs):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {next(iter(specs)): inputs}
    for name in sorted(specs):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    return {name: inputs[name] for name in specs}


def rest_predict_request(
    body: dict, model_spec: model_pb2.ModelSpec, specs: Mapping[str, tf.TensorSpec]
) -> tuple[predict_pb2.PredictRequest, bool]:
    """TF Serving's REST predict body -> a PredictRequest (and whether it used the row format).

    Args:
        body: the parsed JSON object: ``{"signature_name"?, "instances": [...]}`` (row format: one
            entry per example, a value when the signature has one input, else ``{input: value}``)
            or ``{"signature_name"?, "inputs": {input: batch} | batch}`` (columnar format).
        model_spec: model name, version or label from the URL.
        specs: the signature's inputs by name.

    Raises:
        ServingError: INVALID_ARGUMENT for a body TF Serving refuses, naming the input at fault.
    """
    if "instances" in body and "inputs" in body:
        raise invalid_argument(
            f"JSON Value: {_debug(body)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist"
        )
    if "instances" in body:
        instances = body["instances"]
        if type(instances) is not list:
            raise invalid_argument(f"JSON Value: {_debug(body)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {_debug(body)} No values in 'instances' array")
        columns, row_format = _row_columns(instances, specs), True
    elif "inputs" in body:
        columns, row_format = _columnar_columns(body["inputs"], specs), False
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(model_spec)
    request.model_spec.signature_name = body.get("signature_name", "")
    for name, value in columns.items():
        try:
            array = json_tensor(value, specs[name].dtype)
        except ServingError as err:
            raise ServingError(err.code, f"input {name}: {err.message}") from None
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
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
