"""Refused requests and unbindable ports: ServingError carries TF Serving's status; other errors get theirs."""

import errno

import grpc
import pytest
import tensorflow as tf

from lba_tf.serving.errors import PortError, ServingError, bind_error, invalid_argument, status_of


def test_serving_error_carries_code_and_message():
    err = ServingError(grpc.StatusCode.NOT_FOUND, "no such model")
    assert (err.code, err.message, str(err)) == (grpc.StatusCode.NOT_FOUND, "no such model", "no such model")


def test_invalid_argument_is_a_serving_error_with_that_code():
    err = invalid_argument("bad shape")
    assert isinstance(err, ServingError)
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad shape")


def test_a_serving_error_keeps_its_status():
    err = ServingError(grpc.StatusCode.FAILED_PRECONDITION, "no such signature")
    assert status_of(err) is err


@pytest.mark.parametrize(
    "tf_error, code",
    [
        (tf.errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
        (tf.errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
        (tf.errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (tf.errors.UnimplementedError, grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_tensorflow_error_keeps_its_code_and_message(tf_error, code):
    err = status_of(tf_error(None, None, "decode failed"))
    assert (err.code, err.message) == (code, "decode failed")


def test_tensorflow_error_of_unknown_code_is_internal():
    err = status_of(tf.errors.OpError(None, None, "odd", 99))
    assert (err.code, err.message) == (grpc.StatusCode.INTERNAL, "odd")


def test_any_other_error_is_unknown_with_its_type():
    err = status_of(OSError("SavedModel file does not exist at: /m/11"))
    assert (err.code, err.message) == (grpc.StatusCode.UNKNOWN, "OSError: SavedModel file does not exist at: /m/11")


def test_a_taken_port_says_so_and_names_the_flags():
    err = bind_error("127.0.0.1", 8500, "gRPC", OSError(errno.EADDRINUSE, "Address already in use"))
    assert isinstance(err, PortError) and isinstance(err, OSError) and err.errno == errno.EADDRINUSE
    assert str(err) == "port 8500 is in use (gRPC on 127.0.0.1); pick another with --port / --rest-port"


def test_another_bind_failure_keeps_its_reason():
    err = bind_error("10.0.0.9", 80, "REST", OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"))
    assert (str(err), err.errno) == ("cannot bind 10.0.0.9:80 for REST: Cannot assign requested address", 99)
