"""Request handling shared by the gRPC and REST front ends: Predict, GetModelMetadata, GetModelStatus."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2, status_pb2

from lba_tf.serving.batching import BatchScheduler
from lba_tf.serving.errors import ServingError, invalid_argument
from lba_tf.serving.inputs import parse_inputs
from lba_tf.serving.servable import DEFAULT_SIGNATURE, Servable
from lba_tf.serving.versions import ModelManager


class ModelServerCore:
    """The request handling shared by the gRPC and REST front ends.

    Args:
        models: the managers of the served models by name.
        scheduler: merges concurrent Predict requests into batches.
    """

    def __init__(self, models: Mapping[str, ModelManager], scheduler: BatchScheduler):
        self.models, self.scheduler = dict(models), scheduler

    def resolve(self, model_spec) -> tuple[ModelManager, Servable]:
        """The manager and servable a ``ModelSpec`` names.

        Raises:
            ServingError: INVALID_ARGUMENT for no name or a version label (none are configured),
                NOT_FOUND for an unknown model or a version not loaded; TF Serving's codes and
                messages (``model_servers/server_core.cc``, ``core/basic_manager.cc``).
        """
        if not model_spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        if model_spec.WhichOneof("version_choice") == "version_label":
            raise invalid_argument(f"Unrecognized servable version label: {model_spec.version_label}")
        version = model_spec.version.value if model_spec.HasField("version") else None
        manager = self.models.get(model_spec.name)
        if manager is None:
            wanted = f"Latest({model_spec.name})" if version is None else f"Specific({model_spec.name}, {version})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}")
        return manager, manager.get(version)

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Answer a Predict request (``ServingError`` for a bad one)."""
        _require_model_spec(request)
        manager, servable = self.resolve(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = parse_inputs(request.inputs, servable.input_specs(signature))
        outputs = servable.output_names(signature)
        for i, name in enumerate(request.output_filter):
            if name not in outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {name} "
                    f"Outputs expected to be in the set {{{','.join(outputs)}}}."
                )
            if name in request.output_filter[:i]:
                raise invalid_argument(f"duplicate output tensor alias: {name}")
        key = (
            manager.name,
            servable.version,
            signature,
            tuple((name, array.shape[1:], array.dtype.str) for name, array in sorted(inputs.items())),
        )
        result = self.scheduler.submit(key, lambda batch: servable.run(signature, batch), inputs).result()
        response = predict_pb2.PredictResponse()
        response.model_spec.name = manager.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name in request.output_filter or outputs:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(result[name]))
        return response

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Answer GetModelMetadata: the SignatureDefs of the requested version."""
        _require_model_spec(request)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != "signature_def":
                raise invalid_argument(f"Metadata field {name} is not supported")
        manager, servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = manager.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response

    def status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Answer GetModelStatus: the state of every version handled (or of the requested one).

        As TF Serving (``model_servers/get_model_status_impl.cc``): versions highest first, each
        with its state (LOADING, AVAILABLE or END) and the error that ended it, if any; unloaded
        versions stay listed as END.
        """
        _require_model_spec(request)
        spec = request.model_spec
        manager = self.models.get(spec.name)
        states = manager.states() if manager is not None else {}
        if spec.HasField("version"):
            if spec.version.value not in states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {spec.version.value} of model {spec.name}"
                )
            states = {spec.version.value: states[spec.version.value]}
        if not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(states, reverse=True):
            state = states[version]
            status = status_pb2.StatusProto()
            if state.error is not None:
                status.error_code, status.error_message = state.error.code.value[0], state.error.message
            response.model_version_status.add(
                version=version, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state), status=status
            )
        return response


def _require_model_spec(request) -> None:
    """TF Serving refuses a request without a ``model_spec`` before anything else."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
