"""Refused requests: ServingError carries TF Serving's status; TensorFlow errors keep their code."""

import grpc
import pytest
import tensorflow as tf

from lba_tf.serving.errors import ServingError, from_op_error, invalid_argument


def test_serving_error_carries_code_and_message():
    err = ServingError(grpc.StatusCode.NOT_FOUND, "no such model")
    assert (err.code, err.message, str(err)) == (grpc.StatusCode.NOT_FOUND, "no such model", "no such model")


def test_invalid_argument_is_a_serving_error_with_that_code():
    err = invalid_argument("bad shape")
    assert isinstance(err, ServingError)
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad shape")


@pytest.mark.parametrize(
    "tf_error, code",
    [
        (tf.errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
        (tf.errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (tf.errors.UnimplementedError, grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_tensorflow_error_keeps_its_code_and_message(tf_error, code):
    err = from_op_error(tf_error(None, None, "decode failed"))
    assert (err.code, err.message) == (code, "decode failed")


def test_tensorflow_error_of_unknown_code_is_internal():
    err = from_op_error(tf.errors.OpError(None, None, "odd", 99))
    assert (err.code, err.message) == (grpc.StatusCode.INTERNAL, "odd")
