"""serving/: the TF Serving config files parse as the protos TF Serving reads, the compose file as YAML.

``tensorflow-serving-api`` ships ModelServerConfig but not BatchingParameters
(``servables/tensorflow/session_bundle_config.proto``) nor MonitoringConfig
(``config/monitoring_config.proto``); their fields are declared here from those .proto files so
that a misspelt field or a wrong type fails as it would in ``tensorflow_model_server``.
"""

import pathlib

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

SERVING = pathlib.Path(__file__).resolve().parents[2] / "serving"
F = descriptor_pb2.FieldDescriptorProto

# (message, [(field, number, type, label, type_name)]) as in TF Serving's .proto files
UPSTREAM_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, F.LABEL_OPTIONAL, None),
        ("enable_large_batch_splitting", 8, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ],
    "PrometheusConfig": [
        ("enable", 1, F.TYPE_BOOL, F.LABEL_OPTIONAL, None),
        ("path", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tensorflow.serving.PrometheusConfig"),
    ],
}


@pytest.fixture(scope="module")
def upstream():
    """Message classes of the TF Serving protos the pip package lacks, by name."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message, fields in UPSTREAM_MESSAGES.items():
        proto = file.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            proto.field.add(
                name=name, number=number, type=kind, label=label, **({"type_name": type_name} if type_name else {})
            )
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in UPSTREAM_MESSAGES
    }


def _parse(path, message):
    return text_format.Parse((SERVING / path).read_text(), message)


def test_models_config_serves_lba_with_latest_policy():
    config = _parse("models.config", model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("lba", "/models/lba", "tensorflow")
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2  # as the local server's default


def test_batching_parameters(upstream):
    params = _parse("batching_parameters.txt", upstream["BatchingParameters"]())
    assert params.max_batch_size.value == 32
    assert params.batch_timeout_micros.value == 2000  # the local server's --batch-timeout-ms 2
    assert params.num_batch_threads.value >= 1 and params.max_enqueued_batches.value >= 1
    assert not params.pad_variable_length_inputs  # padding images would change their embeddings


def test_the_declared_protos_reject_unknown_fields(upstream):
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 32 }", upstream["BatchingParameters"]())


def test_monitoring_config_exposes_prometheus(upstream):
    config = _parse("monitoring.config", upstream["MonitoringConfig"]())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_compose_starts_tf_serving_on_the_exports_with_the_configs():
    compose = yaml.safe_load((SERVING / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    assert "tensorflow/serving" in service["image"]
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    # "source:target:ro"; the source may hold a "${VAR:-default}" with a colon of its own
    mounts = {target: source for source, target, _ in (volume.rsplit(":", 2) for volume in service["volumes"])}
    assert "/models" in mounts
    flags = dict(flag.split("=", 1) for flag in service["command"])
    assert flags["--enable_batching"] == "true"
    for flag, file in (
        ("--model_config_file", "models.config"),
        ("--batching_parameters_file", "batching_parameters.txt"),
        ("--monitoring_config_file", "monitoring.config"),
    ):
        # each flag names a file mounted from serving/
        assert mounts[flags[flag]] == f"./{file}"
        assert (SERVING / file).is_file()
