"""ModelServerCore: Predict, GetModelMetadata and GetModelStatus answered, or refused with TF Serving's status."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from lba_tf.serving.batching import BatchScheduler
from lba_tf.serving.core import ModelServerCore
from lba_tf.serving.errors import ServingError
from lba_tf.serving.versions import ModelManager, VersionState

PIXELS = np.random.default_rng(2).integers(0, 256, (2, 30, 14, 3), np.uint8)


@pytest.fixture(scope="module")
def core(export_base):
    manager = ModelManager("lba", str(export_base / "lba"))
    manager.poll()
    scheduler = BatchScheduler(max_batch_size=8, timeout_s=0.001)
    yield ModelServerCore({"lba": manager}, scheduler)
    scheduler.close()


def _predict_request(output_filter=(), version=None, label=None, name="lba"):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name, request.model_spec.signature_name = name, "embed_visible"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:  # a oneof member: set, even to "", it replaces the version
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(PIXELS))
    return request


def _refusal(method, request):
    with pytest.raises(ServingError) as info:
        method(request)
    return info.value.code, info.value.message


def test_predict_answers_with_the_servable_outputs(core, servable):
    response = core.predict(_predict_request(output_filter=["embedding"], version=1))
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (
        "lba",
        1,
        "embed_visible",
    )
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["embedding"]),
        servable.run("embed_visible", {"images": PIXELS})["embedding"],
        atol=1e-6,
    )


def test_predict_refuses_what_tf_serving_refuses(core):
    no_spec = _predict_request()
    no_spec.ClearField("model_spec")
    cases = [
        (no_spec, grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        (_predict_request(name=""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            _predict_request(label="stable"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: stable",
        ),
        (_predict_request(name="resnet"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(resnet)"),
        (
            _predict_request(name="resnet", version=3),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(resnet, 3)",
        ),
        (
            _predict_request(output_filter=["logits"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: logits Outputs expected to be in the set {embedding}.",
        ),
        (
            _predict_request(output_filter=["embedding", "embedding"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias: embedding",
        ),
    ]
    for request, code, message in cases:
        assert _refusal(core.predict, request) == (code, message)


def test_metadata_takes_only_signature_def(core):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "labels"])
    request.model_spec.name = "lba"
    assert _refusal(core.metadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field labels is not supported",
    )
    request.ClearField("model_spec")  # checked before the fields
    assert _refusal(core.metadata, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_status_of_every_version_or_one(core):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "lba"
    assert [s.version for s in core.status(request).model_version_status] == [1]
    request.model_spec.version.value = 1
    assert [s.version for s in core.status(request).model_version_status] == [1]
    request.model_spec.name = "resnet"
    assert _refusal(core.status, request) == (grpc.StatusCode.NOT_FOUND, "Could not find version 1 of model resnet")
    request.ClearField("model_spec")
    request.model_spec.name = "resnet"
    assert _refusal(core.status, request) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model resnet")
    request.ClearField("model_spec")
    assert _refusal(core.status, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


class _Manager:
    """A model manager that has handled versions 3 (given up on), 2 (served) and 1 (unloaded)."""

    name = "lba"

    def states(self):
        error = ServingError(grpc.StatusCode.NOT_FOUND, "Could not find variables/variables.index in /m/3")
        return {1: VersionState("END"), 3: VersionState("END", error), 2: VersionState("AVAILABLE")}


def test_status_gives_each_version_its_state_and_error_highest_first():
    response = ModelServerCore({"lba": _Manager()}, scheduler=None).status(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "lba"})
    )
    State = get_model_status_pb2.ModelVersionStatus.State
    assert [
        (s.version, s.state, s.status.error_code, s.status.error_message) for s in response.model_version_status
    ] == [
        (3, State.END, 5, "Could not find variables/variables.index in /m/3"),  # 5: NOT_FOUND
        (2, State.AVAILABLE, 0, ""),
        (1, State.END, 0, ""),
    ]
