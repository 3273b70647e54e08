"""The whole server through its ports: TF Serving's API, parity with the in-process model, errors, versions, CLI."""

import base64
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from lba_tf.export.saved_model import (
    SIGNATURE_NAMES,
    WARMUP_FILE,
    export_saved_model,
    reference_embeddings,
    sample_inputs,
)
from lba_tf.serving.server import serve
from tests.serving.standin import IMAGE_SIZE, StandInEncoder

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (3, 41, 19, 3), np.uint8)  # not the model size: resized in the graph
MODALITY = np.array([1, 0, 1], np.int32)


def _request(signature, inputs, model="lba", version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _embed(stub, signature, inputs, **kwargs):
    response = stub.Predict(_request(signature, inputs, **kwargs), timeout=30)
    return tf.make_ndarray(response.outputs["embedding"]), response.model_spec


def _good_request_still_answered(stub):
    out, _ = _embed(stub, "embed_visible", {"images": PIXELS[:1]})
    assert out.shape == (1, 8)


@pytest.mark.parametrize("signature", SIGNATURE_NAMES)
def test_every_signature_equals_the_in_process_model(stub, standin_model, signature):
    inputs = sample_inputs(signature, PIXELS, MODALITY)
    got, spec = _embed(stub, signature, inputs)
    want = reference_embeddings(standin_model, signature, inputs, IMAGE_SIZE)
    assert got.dtype == np.float32 and got.shape == (3, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (spec.name, spec.version.value, spec.signature_name) == ("lba", 1, signature)


def test_empty_signature_name_means_serving_default(stub, standin_model):
    inputs = sample_inputs("serving_default", PIXELS, MODALITY)
    got, spec = _embed(stub, "", inputs)
    np.testing.assert_allclose(
        got, reference_embeddings(standin_model, "serving_default", inputs, IMAGE_SIZE), atol=1e-5
    )
    assert spec.signature_name == "serving_default"


def test_mixed_modality_batch_gives_each_image_its_stem(stub):
    batch = np.repeat(PIXELS[:1], 4, axis=0)
    mixed, _ = _embed(stub, "serving_default", {"images": batch, "modality": np.array([0, 1, 1, 0], np.int32)})
    visible, _ = _embed(stub, "embed_visible", {"images": batch[:1]})
    infrared, _ = _embed(stub, "embed_infrared", {"images": batch[:1]})
    assert np.abs(visible - infrared).max() > 1e-2
    np.testing.assert_allclose(mixed, np.concatenate([visible, infrared, infrared, visible]), atol=1e-6)


def test_metadata_lists_signatures_with_inputs_and_outputs(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "lba"
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "lba" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    defs = signatures.signature_def
    assert set(SIGNATURE_NAMES) <= set(defs)
    uint8, int32, string, float32 = (d.as_datatype_enum for d in (tf.uint8, tf.int32, tf.string, tf.float32))
    want_inputs = {
        "serving_default": {"images": uint8, "modality": int32},
        "embed_visible": {"images": uint8},
        "embed_infrared": {"images": uint8},
        "embed_visible_bytes": {"image_bytes": string},
        "embed_infrared_bytes": {"image_bytes": string},
    }
    for name, inputs in want_inputs.items():
        assert {k: v.dtype for k, v in defs[name].inputs.items()} == inputs
        output = defs[name].outputs["embedding"]
        assert output.dtype == float32 and [d.size for d in output.tensor_shape.dim] == [-1, 8]
    assert [d.size for d in defs["serving_default"].inputs["images"].tensor_shape.dim] == [-1, -1, -1, 3]


def test_status_reports_the_version_available(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "lba"
    statuses = model_stub.GetModelStatus(request, timeout=30).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)
    ]


BAD_REQUESTS = {
    "unknown signature": (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "embed_thermal" not found.',
        _request("embed_thermal", {"images": PIXELS}),
    ),
    "wrong input name": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found",
        _request("embed_visible", {"image": PIXELS}),
    ),
    "missing input": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing but required: {modality}",
        _request("serving_default", {"images": PIXELS}),
    ),
    "wrong dtype": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "to be uint8 but float is provided",
        _request("embed_visible", {"images": PIXELS.astype(np.float32)}),
    ),
    "wrong rank": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "has shape [41, 19, 3]",
        _request("embed_visible", {"images": PIXELS[0]}),
    ),
    "four channels": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "has shape [3, 41, 19, 4]",
        _request("embed_visible", {"images": np.concatenate([PIXELS, PIXELS[..., :1]], -1)}),
    ),
    "unequal batch sizes": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "different batch sizes",
        _request("serving_default", {"images": PIXELS, "modality": MODALITY[:2]}),
    ),
    "modality 2": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "modality must be 0",
        _request("serving_default", {"images": PIXELS, "modality": np.array([0, 2, 1], np.int32)}),
    ),
    "undecodable bytes": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
        _request("embed_infrared_bytes", {"image_bytes": np.array([b"not an image"], object)}),
    ),
    "unknown model": (
        grpc.StatusCode.NOT_FOUND,
        "Latest(resnet)",
        _request("embed_visible", {"images": PIXELS}, model="resnet"),
    ),
    "unknown version": (
        grpc.StatusCode.NOT_FOUND,
        "Specific(lba, 9)",
        _request("embed_visible", {"images": PIXELS}, version=9),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_tf_serving_status_and_server_goes_on(stub, case):
    code, detail, request = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == code
    assert detail in info.value.details()
    _good_request_still_answered(stub)


def test_bad_metadata_and_status_requests(stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "lba"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name, request.model_spec.version.value = "lba", 4
    with pytest.raises(grpc.RpcError) as info:
        model_stub.GetModelStatus(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_requests_with_one_bad_image(stub, standin_model):
    good = sample_inputs("embed_visible_bytes", PIXELS[:1], MODALITY[:1])
    bad = {"image_bytes": np.array([b"\x89PNG broken"], object)}
    want = reference_embeddings(standin_model, "embed_visible_bytes", good, IMAGE_SIZE)
    results = {}

    def call(i):
        try:
            results[i] = _embed(stub, "embed_visible_bytes", bad if i == 3 else good)[0]
        except grpc.RpcError as err:
            results[i] = err.code()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.pop(3) == grpc.StatusCode.INVALID_ARGUMENT
    for out in results.values():
        np.testing.assert_allclose(out, want, atol=1e-5)


def _latest_version(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "lba"
    return stub.GetModelMetadata(request, timeout=30).model_spec.version.value


def _wait(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_versions_appearing_while_running_are_served(tmp_path, standin_model, export_base):
    model_dir = tmp_path / "lba"
    handle = serve(str(model_dir), "lba", port=0, poll_seconds=0.2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:  # nothing exported yet
                _embed(stub, "embed_visible", {"images": PIXELS})
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

            # a partial copy under a temporary name is ignored; the rename makes it version 1
            os.makedirs(model_dir)
            shutil.copytree(export_base / "lba" / "1", model_dir / ".incoming")
            os.remove(model_dir / ".incoming" / "saved_model.pb")
            os.makedirs(model_dir / "3")  # an empty version directory is not a model either
            assert not _wait(lambda: handle.core.models["lba"].versions(), timeout=1.0)
            shutil.rmtree(model_dir / "3")
            shutil.copy(export_base / "lba" / "1" / "saved_model.pb", model_dir / ".incoming")
            os.rename(model_dir / ".incoming", model_dir / "1")
            assert _wait(lambda: handle.core.models["lba"].versions() == [1])
            first, _ = _embed(stub, "embed_visible", {"images": PIXELS})

            other = StandInEncoder(seed=7)
            export_saved_model(other, str(tmp_path), "lba", image_size=IMAGE_SIZE)
            assert _wait(lambda: _latest_version(stub) == 2)
            latest, spec = _embed(stub, "embed_visible", {"images": PIXELS})
            pinned, _ = _embed(stub, "embed_visible", {"images": PIXELS}, version=1)
            assert spec.version.value == 2
            np.testing.assert_allclose(
                latest, reference_embeddings(other, "embed_visible", {"images": PIXELS}, IMAGE_SIZE), atol=1e-5
            )
            np.testing.assert_allclose(pinned, first, atol=1e-6)  # the previous version stays loaded
            assert np.abs(latest - first).max() > 1e-2

            shutil.rmtree(model_dir / "1")  # a removed version is unloaded
            assert _wait(lambda: handle.core.models["lba"].versions() == [2])
            with pytest.raises(grpc.RpcError) as info:
                _embed(stub, "embed_visible", {"images": PIXELS}, version=1)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        handle.stop(grace=0.5)


def test_an_incomplete_version_completed_later_is_served_while_the_old_one_answers(
    tmp_path, export_base, standin_model, caplog
):
    # a copy that wrote saved_model.pb before variables/: loading fails, and completing
    # variables/ does not touch the version directory's mtime; the retries pick it up
    model_dir = tmp_path / "lba"
    shutil.copytree(export_base / "lba" / "1", model_dir / "1")
    other = StandInEncoder(seed=7)
    staged = export_saved_model(other, str(tmp_path / "staging"), "lba", image_size=IMAGE_SIZE)
    handle = serve(
        str(model_dir),
        "lba",
        port=0,
        poll_seconds=0.1,
        num_versions=1,
        max_num_load_retries=100,
        load_retry_interval_s=0.1,
    )
    answered, failures, stop = [], [], threading.Event()

    def ask():
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    out, spec = _embed(stub, "embed_visible", {"images": PIXELS[:1]})
                    answered.append((spec.version.value, out))
                except grpc.RpcError as err:
                    failures.append(err.code())
                stop.wait(0.02)  # leave the loads some CPU

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        shutil.copytree(staged, model_dir / "2", ignore=lambda d, names: names if d.endswith("variables") else [])
        stamp = os.stat(model_dir / "2").st_mtime_ns
        failed = "model lba: version 2 failed to load (attempt 1 of 101)"
        with caplog.at_level(logging.WARNING, logger="lba_tf"):
            assert _wait(lambda: any(r.getMessage().startswith(failed) for r in caplog.records))
        states = handle.core.models["lba"].states()
        assert (states[1].state, states[2].state) == ("AVAILABLE", "LOADING")
        for name in os.listdir(os.path.join(staged, "variables")):
            shutil.copy(os.path.join(staged, "variables", name), model_dir / "2" / "variables")
        assert os.stat(model_dir / "2").st_mtime_ns == stamp
        assert _wait(lambda: answered and answered[-1][0] == 2, timeout=60)
    finally:
        stop.set()
        asker.join()
        handle.stop(grace=0.5)
    versions = [version for version, _ in answered]
    assert failures == [] and versions == sorted(versions) and versions[0] == 1  # 1 until 2 is served
    want = {
        v: reference_embeddings(m, "embed_visible", {"images": PIXELS[:1]}, IMAGE_SIZE)
        for v, m in ((1, standin_model), (2, other))
    }
    for version, out in answered:
        np.testing.assert_allclose(out, want[version], atol=1e-5)


def test_a_version_whose_warm_up_fails_is_reported_in_status_and_log(tmp_path, export_base, caplog):
    model_dir = tmp_path / "lba"
    shutil.copytree(export_base / "lba" / "1", model_dir / "1")
    with open(model_dir / "1" / WARMUP_FILE, "wb") as f:
        f.write(b"not a TFRecord file")
    with caplog.at_level(logging.ERROR, logger="lba_tf"):
        handle = serve(str(model_dir), "lba", port=0, rest_port=0, max_num_load_retries=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                _embed(prediction_service_pb2_grpc.PredictionServiceStub(channel), "embed_visible", {"images": PIXELS})
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.NOT_FOUND,
                "Servable not found for request: Latest(lba)",
            )
            statuses = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "lba"}), timeout=30
            )
        (status,) = statuses.model_version_status
        assert (status.version, status.state) == (1, get_model_status_pb2.ModelVersionStatus.END)
        assert status.status.error_code == grpc.StatusCode.DATA_LOSS.value[0] and status.status.error_message
        code, body = _rest(handle, "/v1/models/lba")
        assert code == 200 and body["model_version_status"] == [
            {
                "version": "1",
                "state": "END",
                "status": {"error_code": "DATA_LOSS", "error_message": status.status.error_message},
            }
        ]
        reason = f"DATA_LOSS: {status.status.error_message}"
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
            f"model lba: version 1 is not served: 1 of 1 load attempts failed ({reason}); "
            "it is tried again once its directory changes"
        ]
    finally:
        handle.stop(grace=0.5)


def _rest(server, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}", data=data, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_predict_row_and_columnar_formats(server, stub):
    grpc_out, _ = _embed(stub, "serving_default", {"images": PIXELS, "modality": MODALITY})
    rows = [{"images": image.tolist(), "modality": int(m)} for image, m in zip(PIXELS, MODALITY)]
    status, body = _rest(server, "/v1/models/lba:predict", {"instances": rows})
    assert status == 200
    np.testing.assert_allclose(body["predictions"], grpc_out, atol=1e-6)
    status, body = _rest(
        server,
        "/v1/models/lba/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"images": PIXELS.tolist(), "modality": MODALITY.tolist()}},
    )
    assert status == 200
    np.testing.assert_allclose(body["outputs"], grpc_out, atol=1e-6)


def test_rest_bytes_status_and_errors(server, stub):
    data = sample_inputs("embed_visible_bytes", PIXELS[:2], MODALITY[:2])["image_bytes"]
    grpc_out, _ = _embed(stub, "embed_visible_bytes", {"image_bytes": data})
    status, body = _rest(
        server,
        "/v1/models/lba:predict",
        {"signature_name": "embed_visible_bytes", "instances": [{"b64": base64.b64encode(d).decode()} for d in data]},
    )
    assert status == 200
    np.testing.assert_allclose(body["predictions"], grpc_out, atol=1e-6)
    status, body = _rest(server, "/v1/models/lba")
    assert status == 200 and body["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    status, body = _rest(server, "/v1/models/lba/metadata")
    assert status == 200 and set(SIGNATURE_NAMES) <= set(body["metadata"]["signature_def"]["signature_def"])
    status, body = _rest(server, "/v1/models/lba:predict", {"signature_name": "embed_visible", "instances": [[1, 2]]})
    assert status == 400 and "shape" in body["error"]
    status, body = _rest(server, "/v1/models/other:predict", {"instances": []})
    assert status == 404 and "error" in body


@pytest.mark.slow
def test_command_line_server_stops_cleanly_on_sigterm(export_base):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [sys.executable, "-m", "lba_tf.serving.server", "--model-base-path", str(export_base / "lba"), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in process.stderr:
            if "gRPC on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        else:
            pytest.fail("the server did not start")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            _good_request_still_answered(stub)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _non_loopback_address():
    """An address of this machine other than loopback, or ``None`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_localhost_and_caps_message_size(export_base):
    handle = serve(str(export_base / "lba"), "lba", port=0, max_message_mb=1)
    try:
        address = _non_loopback_address()
        if address is not None:  # the port is closed on the machine's other interfaces
            with pytest.raises(OSError):
                socket.create_connection((address, handle.port), timeout=2).close()
        with grpc.insecure_channel(
            f"localhost:{handle.port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            big = np.zeros((16, 256, 128, 3), np.uint8)  # 16 x 96 KiB = 1.5 MiB > 1 MiB
            with pytest.raises(grpc.RpcError) as info:
                _embed(stub, "embed_visible", {"images": big})
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            out, _ = _embed(stub, "embed_visible", {"images": big[:1]})  # 96 KiB: answered
            assert out.shape == (1, 8)
    finally:
        handle.stop(grace=0.5)


@pytest.fixture
def taken_port():
    """A localhost port held by a plain listening socket (no SO_REUSEPORT, so nothing else binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("which", ["gRPC", "REST"])
def test_taken_port_is_an_oserror_and_stops_what_started(export_base, taken_port, which):
    before = set(threading.enumerate())
    ports = {"port": taken_port, "rest_port": None} if which == "gRPC" else {"port": 0, "rest_port": taken_port}
    with pytest.raises(OSError, match=f"port {taken_port} is in use \\({which} on 127.0.0.1\\)") as info:
        serve(str(export_base / "lba"), "lba", **ports)
    assert info.value.errno == errno.EADDRINUSE
    assert _wait(lambda: set(threading.enumerate()) <= before, timeout=5.0)


def test_command_line_taken_port_is_one_line_and_status_2(export_base, taken_port):
    # in a subprocess, so that anything written to the native stderr (gRPC's own logging) is seen
    result = subprocess.run(
        [sys.executable, "-m", "lba_tf.serving.server", "--model-base-path", str(export_base / "lba")]
        + ["--port", str(taken_port)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: port {taken_port} is in use (gRPC on 127.0.0.1); pick another with --port / --rest-port\n"
    )
