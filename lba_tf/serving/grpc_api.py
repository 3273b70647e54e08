"""TF Serving's gRPC services over the request handling: ``PredictionService`` and ``ModelService``."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from lba_tf.log import logger
from lba_tf.serving.core import ModelServerCore
from lba_tf.serving.errors import ServingError


def _answer(core_method: Callable, request, context: grpc.ServicerContext):
    """``core_method(request)``; a ``ServingError`` aborts with its status, any other error with INTERNAL."""
    try:
        return core_method(request)
    except ServingError as err:
        context.abort(err.code, err.message)
    except Exception as err:  # a bug must not take the server down; the client sees INTERNAL
        logger.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata.

    Args:
        core: the request handling.
    """

    def __init__(self, core: ModelServerCore):
        self.core = core

    def Predict(self, request, context):
        return _answer(self.core.predict, request, context)

    def GetModelMetadata(self, request, context):
        return _answer(self.core.metadata, request, context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus.

    Args:
        core: the request handling.
    """

    def __init__(self, core: ModelServerCore):
        self.core = core

    def GetModelStatus(self, request, context):
        return _answer(self.core.status, request, context)


def add_services(server: grpc.Server, core: ModelServerCore) -> None:
    """Register both services on ``server``, answering with ``core``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
