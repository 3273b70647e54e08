"""Refused requests: ``ServingError`` and the gRPC status TF Serving gives for each kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    import tensorflow as tf

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request the server refuses, with the gRPC status TF Serving gives for it.

    Args:
        code: the ``grpc.StatusCode``.
        message: the error detail sent to the client.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def invalid_argument(message: str) -> ServingError:
    """A ``ServingError`` with INVALID_ARGUMENT, TF Serving's status for a malformed request."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_op_error(err: tf.errors.OpError) -> ServingError:
    """A TensorFlow runtime error as the status TF Serving returns (TF and gRPC share the codes)."""
    return ServingError(_GRPC_CODES.get(err.error_code, grpc.StatusCode.INTERNAL), err.message)
