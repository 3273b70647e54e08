"""Refused requests (``ServingError``, with the gRPC status TF Serving gives) and unbindable ports."""

from __future__ import annotations

import errno as errno_module

import grpc

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


def status_of(err: BaseException) -> ServingError:
    """Any error as the status TF Serving reports for it.

    A ``ServingError`` keeps its status, a TensorFlow ``OpError`` its code (TF and gRPC share
    the codes), anything else is UNKNOWN, as TF Serving reports an error without a code.
    """
    if isinstance(err, ServingError):
        return err
    code = getattr(err, "error_code", None)  # tf.errors.OpError, without importing TensorFlow here
    if isinstance(code, int):
        return ServingError(_GRPC_CODES.get(code, grpc.StatusCode.INTERNAL), getattr(err, "message", str(err)))
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(err).__name__}: {err}")


class PortError(OSError):
    """A port the server cannot bind; ``str()`` is the one line to show, ``errno`` the cause."""

    def __init__(self, message: str, errno: int | None):
        super().__init__(message)
        self.errno = errno


def bind_error(host: str, port: int, api: str, err: OSError) -> PortError:
    """The ``PortError`` of ``api`` ("gRPC", "REST") failing to bind ``host:port`` with ``err``."""
    if err.errno == errno_module.EADDRINUSE:
        return PortError(f"port {port} is in use ({api} on {host}); pick another with --port / --rest-port", err.errno)
    return PortError(f"cannot bind {host}:{port} for {api}: {err.strerror or err}", err.errno)
