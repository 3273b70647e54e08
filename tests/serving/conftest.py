"""Serving fixtures: the stand-in encoder, its export, its loaded servable, a local server on a free port."""

import grpc
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from lba_tf.export.saved_model import export_saved_model
from lba_tf.serving.servable import Servable
from lba_tf.serving.server import serve
from tests.serving.standin import IMAGE_SIZE, StandInEncoder


@pytest.fixture(scope="session")
def standin_model():
    return StandInEncoder(seed=0)


@pytest.fixture(scope="session")
def export_base(standin_model, tmp_path_factory):
    """``<base>`` holding ``lba/1``, the stand-in's export at ``IMAGE_SIZE``."""
    base = tmp_path_factory.mktemp("exports")
    export_saved_model(standin_model, str(base), "lba", image_size=IMAGE_SIZE)
    return base


@pytest.fixture(scope="session")
def servable(export_base):
    """Version 1 of the export, loaded."""
    return Servable(str(export_base / "lba" / "1"), 1)


@pytest.fixture(scope="session")
def server(export_base):
    """A local server of ``lba`` on free localhost ports (gRPC and REST)."""
    handle = serve(str(export_base / "lba"), "lba", port=0, rest_port=0, batch_timeout_ms=5, poll_seconds=0.2)
    yield handle
    handle.stop(grace=0.5)


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture(scope="session")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)
