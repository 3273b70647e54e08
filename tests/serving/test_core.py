"""ModelServerCore: Predict, GetModelMetadata and GetModelStatus answered, or refused with TF Serving's status."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from lba_tf.serving.batching import BatchScheduler
from lba_tf.serving.core import ModelServerCore
from lba_tf.serving.errors import ServingError
from lba_tf.serving.versions import ModelManager

PIXELS = np.random.default_rng(2).integers(0, 256, (2, 30, 14, 3), np.uint8)


@pytest.fixture(scope="module")
def core(export_base):
    manager = ModelManager("lba", str(export_base / "lba"))
    manager.poll()
    scheduler = BatchScheduler(max_batch_size=8, timeout_s=0.001)
    yield ModelServerCore({"lba": manager}, scheduler)
    scheduler.close()


def _predict_request(output_filter=(), version=None, label=""):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name, request.model_spec.signature_name = "lba", "embed_visible"
    if version is not None:
        request.model_spec.version.value = version
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


def test_predict_refuses_an_unknown_output_or_a_version_label(core):
    assert _refusal(core.predict, _predict_request(output_filter=["logits"])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits Outputs expected to be in the set {embedding}.",
    )
    assert _refusal(core.predict, _predict_request(label="stable")) == (
        grpc.StatusCode.NOT_FOUND,
        "Unrecognized servable version label: stable",
    )


def test_metadata_takes_only_signature_def(core):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "labels"])
    request.model_spec.name = "lba"
    assert _refusal(core.metadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field labels is not supported",
    )


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
