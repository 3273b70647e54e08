"""gRPC front end: each call answered by its request handler, refusals and bugs as gRPC statuses."""

import grpc
import pytest

from lba_tf.serving.errors import ServingError
from lba_tf.serving.grpc_api import ModelServicer, PredictionServicer


class _Aborted(Exception):
    pass


class _Context:
    """The part of ``grpc.ServicerContext`` the servicers use: ``abort`` records and raises."""

    def abort(self, code, details):
        self.code, self.details = code, details
        raise _Aborted


def _reply(method, request):
    if request == "refuse":
        raise ServingError(grpc.StatusCode.NOT_FOUND, "no such version")
    if request == "break":
        raise KeyError("bug")
    return f"{method} answers {request}"


class _Core:
    """Request handling that answers with its method's name, refuses or breaks, by the request."""

    def predict(self, request):
        return _reply("predict", request)

    def metadata(self, request):
        return _reply("metadata", request)

    def status(self, request):
        return _reply("status", request)


CALLS = {
    "Predict": (PredictionServicer, "predict"),
    "GetModelMetadata": (PredictionServicer, "metadata"),
    "GetModelStatus": (ModelServicer, "status"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_call_returns_the_core_answer(call):
    servicer, core_method = CALLS[call]
    assert getattr(servicer(_Core()), call)("question", _Context()) == f"{core_method} answers question"


@pytest.mark.parametrize("call", sorted(CALLS))
def test_serving_error_aborts_with_its_status(call):
    servicer, _ = CALLS[call]
    context = _Context()
    with pytest.raises(_Aborted):
        getattr(servicer(_Core()), call)("refuse", context)
    assert (context.code, context.details) == (grpc.StatusCode.NOT_FOUND, "no such version")


@pytest.mark.parametrize("call", sorted(CALLS))
def test_any_other_error_aborts_with_internal(call):
    servicer, _ = CALLS[call]
    context = _Context()
    with pytest.raises(_Aborted):
        getattr(servicer(_Core()), call)("break", context)
    assert (context.code, context.details) == (grpc.StatusCode.INTERNAL, "KeyError: 'bug'")
