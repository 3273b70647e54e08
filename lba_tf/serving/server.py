"""A local model server that speaks TensorFlow Serving's gRPC API (and its REST predict).

It serves the export directory ``make export`` writes (``<base>/<name>/<version>/``) with the
services of TF Serving, built on the ``tensorflow-serving-api`` stubs:
``tensorflow.serving.PredictionService`` (``Predict``, ``GetModelMetadata``) and
``tensorflow.serving.ModelService`` (``GetModelStatus``). A client cannot tell it from
``tensorflow_model_server``; ``serving/`` holds the configuration for the real one.

Behaviour, matching TF Serving configured as in ``serving/models.config``:

- version policy "latest" with ``num_versions`` (default 2): the highest version and the one
  before it stay loaded; requests without a version go to the highest. The base path is polled,
  so a version that appears while running is loaded (warm-up requests replayed first) and then
  served, and one that disappears is unloaded.
- bad requests get TF Serving's status codes: INVALID_ARGUMENT for a wrong signature, input
  name, dtype or shape, or an undecodable image; NOT_FOUND for an unknown model or version;
  UNAVAILABLE while no version is loaded. The server keeps serving.
- concurrent requests for the same signature and input shape are merged into one batch of at
  most ``max_batch_size`` images, waiting at most ``batch_timeout_ms`` for company.

    python -m lba_tf.serving.server --model-base-path exports/lba --port 8500
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import http.server
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import grpc
import numpy as np

from lba_tf.log import import_tensorflow_quietly
from lba_tf.runtime import tune_allocator

tune_allocator()  # before TensorFlow's threads start: see lba_tf.runtime
import_tensorflow_quietly()  # its CUDA stub prints at load time otherwise
import tensorflow as tf  # noqa: E402
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, status_pb2)

from lba_tf.export.saved_model import WARMUP_FILE
from lba_tf.log import logger, setup_logging

DEFAULT_SIGNATURE = "serving_default"
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


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _from_op_error(err: tf.errors.OpError) -> ServingError:
    """A TensorFlow runtime error as the status TF Serving returns (TF and gRPC share the codes)."""
    return ServingError(_GRPC_CODES.get(err.error_code, grpc.StatusCode.INTERNAL), err.message)


class Servable:
    """One loaded version of a SavedModel: its signatures and their SignatureDefs.

    Args:
        path: the version directory.
        version: its version number.
    """

    def __init__(self, path: str, version: int):
        self.path, self.version = path, version
        self._loaded = tf.saved_model.load(path)
        self.signatures = dict(self._loaded.signatures)
        self.signature_defs = _read_signature_defs(path)

    def input_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        """The inputs of ``signature`` by name (``ServingError`` when there is no such signature)."""
        if signature not in self.signatures:
            raise _invalid(f'Serving signature name: "{signature}" not found in signature def')
        return dict(self.signatures[signature].structured_input_signature[1])

    def output_names(self, signature: str) -> list[str]:
        """The output names of ``signature``."""
        return sorted(self.signatures[signature].structured_outputs)

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``signature`` on validated numpy inputs; a TF runtime error becomes ``ServingError``."""
        try:
            outputs = self.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as err:
            raise _from_op_error(err) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def warm_up(self) -> int:
        """Replay the export's warm-up requests (``assets.extra``); return how many ran."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                continue
            request = log.predict_log.request
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            self.run(signature, parse_inputs(request.inputs, self.input_specs(signature)))
            count += 1
        return count


def _read_signature_defs(path: str) -> get_model_metadata_pb2.SignatureDefMap:
    """The SignatureDef map of a SavedModel's serving graph, as GetModelMetadata returns it."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for meta_graph in saved.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            for name, signature_def in meta_graph.signature_def.items():
                signature_map.signature_def[name].CopyFrom(signature_def)
    return signature_map


def _dtype_name(dtype: int) -> str:
    """TensorFlow's C++ name of a DataType enum (``DT_FLOAT`` -> ``float``), as TF Serving reports it."""
    return types_pb2.DataType.Name(dtype)[3:].lower() if dtype in types_pb2.DataType.values() else str(dtype)


def parse_inputs(tensors: Mapping[str, tf.compat.v1.TensorProto],
                 specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Check request tensors against a signature's inputs and convert them to numpy.

    Args:
        tensors: the request's ``inputs`` map of ``TensorProto``.
        specs: the signature's inputs by name.

    Returns:
        numpy arrays by input name, all with the same batch size.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown or missing name, a wrong dtype, a shape
            the signature does not accept, a malformed tensor or unequal batch sizes.
    """
    expected = "{" + ",".join(sorted(specs)) + "}"
    for name in tensors:
        if name not in specs:
            raise _invalid(f"input tensor alias not found in signature: {name}. "
                           f"Inputs expected to be in the set {expected}.")
    missing = sorted(set(specs) - set(tensors))
    if missing:
        raise _invalid(f"Request inputs do not match required inputs for the signature. "
                       f"Missing but required: {{{','.join(missing)}}}.")
    arrays = {}
    for name, spec in specs.items():
        proto = tensors[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise _invalid(f"Expects arg[{name}] to be {_dtype_name(spec.dtype.as_datatype_enum)} "
                           f"but {_dtype_name(proto.dtype)} is provided")
        try:
            array = tf.make_ndarray(proto)
        except Exception as err:  # malformed content: a size that does not match the shape, ...
            raise _invalid(f"input {name}: malformed tensor: {err}") from None
        if not spec.shape.is_compatible_with(array.shape):
            raise _invalid(f"input {name} has shape {list(array.shape)}, the signature takes "
                           f"{[d if d is not None else -1 for d in spec.shape.as_list()]}")
        arrays[name] = array
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise _invalid(f"inputs have different batch sizes: {sizes}")
    return arrays


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)


class BatchScheduler:
    """Merges concurrent requests with the same key into batches, runs them, splits the results.

    A request is queued under a key (model, version, signature and per-example input shapes,
    so that its arrays can be concatenated with the others'). A batching thread takes the key
    whose oldest request waited longest, waits until the key holds ``max_batch_size`` examples
    or that request has waited ``timeout_s``, runs the merged batch and hands each request its
    rows. A batch that fails is re-run request by request so that one bad request (an
    undecodable image) fails alone.

    Args:
        max_batch_size: largest merged batch (a larger single request runs alone).
        timeout_s: longest wait for more requests.
        num_threads: batching threads.
    """

    def __init__(self, max_batch_size: int = 32, timeout_s: float = 0.002, num_threads: int = 1):
        self.max_batch_size, self.timeout_s = int(max_batch_size), float(timeout_s)
        self._queues: dict[tuple, collections.deque] = {}
        self._runners: dict[tuple, Callable] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"batching-{i}", daemon=True)
                         for i in range(num_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: tuple, run: Callable[[dict], dict],
               inputs: dict[str, np.ndarray]) -> concurrent.futures.Future:
        """Queue one request.

        Args:
            key: requests with equal keys may be merged; ``run`` must be the same for them.
            run: batched inputs -> outputs by name, each ``[batch, ...]``.
            inputs: this request's arrays, each ``[size, ...]``.

        Returns:
            A future of this request's outputs.
        """
        task = _Task(inputs, len(next(iter(inputs.values()))))
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            self._queues.setdefault(key, collections.deque()).append(task)
            self._runners[key] = run
            self._cond.notify_all()
        return task.future

    def close(self) -> None:
        """Run what is queued, then stop the batching threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _queued(self, key: tuple) -> int:
        return sum(task.size for task in self._queues.get(key, ()))

    def _take(self) -> tuple[Callable, list[_Task]] | None:
        """Wait for a batch to be due and take it off the queue (``None`` once closed and empty)."""
        with self._cond:
            while True:
                if not self._queues:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                key = min(self._queues, key=lambda k: self._queues[k][0].enqueued)
                deadline = self._queues[key][0].enqueued + self.timeout_s
                while (not self._closed and key in self._queues and self._queued(key) < self.max_batch_size
                       and time.monotonic() < deadline):
                    self._cond.wait(max(deadline - time.monotonic(), 0.0))
                if key not in self._queues:  # another batching thread took it
                    continue
                queue, tasks, total = self._queues[key], [], 0
                while queue and (not tasks or total + queue[0].size <= self.max_batch_size):
                    total += queue[0].size
                    tasks.append(queue.popleft())
                run = self._runners[key]
                if not queue:
                    del self._queues[key], self._runners[key]
                return run, tasks

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            run, tasks = batch
            try:
                self._execute(run, tasks)
            except BaseException as err:  # keep the thread alive whatever a run raises
                for task in tasks:
                    if not task.future.done():
                        task.future.set_exception(err)

    @staticmethod
    def _execute(run: Callable, tasks: list[_Task]) -> None:
        if len(tasks) == 1:
            try:
                tasks[0].future.set_result(run(tasks[0].inputs))
            except Exception as err:
                tasks[0].future.set_exception(err)
            return
        merged = {name: np.concatenate([task.inputs[name] for task in tasks]) for name in tasks[0].inputs}
        try:
            outputs = run(merged)
        except ServingError:
            for task in tasks:
                BatchScheduler._execute(run, [task])
            return
        offsets = np.cumsum([task.size for task in tasks])[:-1]
        parts = {name: np.split(value, offsets) for name, value in outputs.items()}
        for i, task in enumerate(tasks):
            task.future.set_result({name: pieces[i] for name, pieces in parts.items()})


class ModelManager:
    """The loaded versions of one model under ``<base_path>``, kept current by polling.

    Version policy "latest": the ``num_versions`` highest integer-named directories holding a
    ``saved_model.pb`` are loaded; other versions are unloaded. A version that fails to load is
    retried when its directory changes.

    Args:
        name: the model name clients use.
        base_path: the directory holding the version directories.
        num_versions: how many of the highest versions stay loaded.
    """

    def __init__(self, name: str, base_path: str, num_versions: int = 2):
        self.name, self.base_path, self.num_versions = name, base_path, int(num_versions)
        self._servables: dict[int, Servable] = {}
        self._failed: dict[int, float] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def present_versions(self) -> list[int]:
        """Complete version directories on disk, ascending."""
        if not os.path.isdir(self.base_path):
            return []
        return sorted(int(entry) for entry in os.listdir(self.base_path)
                      if entry.isdigit() and int(entry) > 0
                      and os.path.exists(os.path.join(self.base_path, entry, "saved_model.pb")))

    def poll(self) -> None:
        """Load the versions the policy wants and unload the others."""
        with self._poll_lock:
            wanted = self.present_versions()[-self.num_versions:]
            for version in wanted:
                if version not in self._servables:
                    self._load(version)
            with self._lock:
                for version in set(self._servables) - set(wanted):
                    del self._servables[version]
                    logger.info("model %s: unloaded version %d", self.name, version)

    def _load(self, version: int) -> None:
        path = os.path.join(self.base_path, str(version))
        stamp = os.path.getmtime(path)
        if self._failed.get(version) == stamp:
            return
        try:
            servable = Servable(path, version)
            warmed = servable.warm_up()
        except Exception as err:
            self._failed[version] = stamp
            logger.error("model %s: version %d failed to load: %s", self.name, version, err)
            return
        with self._lock:
            self._servables[version] = servable
        logger.info("model %s: loaded version %d (%d warm-up requests)", self.name, version, warmed)

    def start_polling(self, seconds: float) -> None:
        """Poll the base path every ``seconds`` in a background thread."""
        def loop():
            while not self._stop.wait(seconds):
                try:
                    self.poll()
                except Exception as err:  # a vanished directory mid-listing, ...: try again next time
                    logger.error("model %s: polling failed: %s", self.name, err)

        self._thread = threading.Thread(target=loop, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def versions(self) -> list[int]:
        """Loaded versions, ascending."""
        with self._lock:
            return sorted(self._servables)

    def get(self, version: int | None = None) -> Servable:
        """The servable of ``version`` (default: the highest loaded).

        Raises:
            ServingError: UNAVAILABLE when nothing is loaded yet, NOT_FOUND for a version that
                is not loaded.
        """
        with self._lock:
            if version is None:
                if not self._servables:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"Servable not found for request: Latest({self.name}): "
                                       f"no version of the model is loaded yet")
                return self._servables[max(self._servables)]
            if version not in self._servables:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({self.name}, {version})")
            return self._servables[version]


class ModelServerCore:
    """The request handling shared by the gRPC and REST front ends.

    Args:
        models: the managers of the served models by name.
        scheduler: merges concurrent Predict requests into batches.
    """

    def __init__(self, models: Mapping[str, ModelManager], scheduler: BatchScheduler):
        self.models, self.scheduler = dict(models), scheduler

    def resolve(self, model_spec) -> tuple[ModelManager, Servable]:
        manager = self.models.get(model_spec.name)
        if manager is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({model_spec.name})")
        if model_spec.version_label:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Unrecognized servable version label: {model_spec.version_label}")
        version = model_spec.version.value if model_spec.HasField("version") else None
        return manager, manager.get(version)

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Answer a Predict request (``ServingError`` for a bad one)."""
        manager, servable = self.resolve(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = parse_inputs(request.inputs, servable.input_specs(signature))
        outputs = servable.output_names(signature)
        for name in request.output_filter:
            if name not in outputs:
                raise _invalid(f"output tensor alias not found in signature: {name} "
                               f"Outputs expected to be in the set {{{','.join(outputs)}}}.")
        key = (manager.name, servable.version, signature,
               tuple((name, array.shape[1:], array.dtype.str) for name, array in sorted(inputs.items())))
        result = self.scheduler.submit(key, lambda batch: servable.run(signature, batch), inputs).result()
        response = predict_pb2.PredictResponse()
        response.model_spec.name = manager.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name in (request.output_filter or outputs):
            response.outputs[name].CopyFrom(tf.make_tensor_proto(result[name]))
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Answer GetModelMetadata: the SignatureDefs of the requested version."""
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != "signature_def":
                raise _invalid(f"Metadata field {name} is not supported")
        manager, servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = manager.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response

    def status(self, request: get_model_status_pb2.GetModelStatusRequest
               ) -> get_model_status_pb2.GetModelStatusResponse:
        """Answer GetModelStatus: every loaded version (or the requested one) as AVAILABLE."""
        spec = request.model_spec
        manager = self.models.get(spec.name)
        versions = manager.versions() if manager is not None else []
        if spec.HasField("version"):
            if spec.version.value not in versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {spec.version.value} of model {spec.name}")
            versions = [spec.version.value]
        if not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            response.model_version_status.add(version=version,
                                              state=get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                                              status=status_pb2.StatusProto())
        return response


def _answer(core_method: Callable, request, context: grpc.ServicerContext):
    try:
        return core_method(request)
    except ServingError as err:
        context.abort(err.code, err.message)
    except Exception as err:  # a bug must not take the server down; the client sees INTERNAL
        logger.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, core: ModelServerCore):
        self.core = core

    def Predict(self, request, context):
        return _answer(self.core.predict, request, context)

    def GetModelMetadata(self, request, context):
        return _answer(self.core.metadata, request, context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus."""

    def __init__(self, core: ModelServerCore):
        self.core = core

    def GetModelStatus(self, request, context):
        return _answer(self.core.status, request, context)


_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
                grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503}
_REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                        r"(?P<verb>:predict|/metadata)?$")


def _json_column(values, spec: tf.TensorSpec) -> np.ndarray:
    """A JSON batch of one input -> numpy of the signature's dtype (``{"b64": ...}`` for bytes)."""
    import base64

    if spec.dtype == tf.string:
        def to_bytes(value):
            if isinstance(value, list):
                return [to_bytes(v) for v in value]
            if isinstance(value, dict) and "b64" in value:
                return base64.b64decode(value["b64"])
            if isinstance(value, str):
                return value.encode()
            raise ValueError(f"expected a string or {{\"b64\": ...}}, got {type(value).__name__}")
        return np.array(to_bytes(values), dtype=object)
    return np.asarray(values, dtype=spec.dtype.as_numpy_dtype)


def rest_predict_request(body: dict, name: str, version: int | None,
                         specs: Mapping[str, tf.TensorSpec]) -> tuple[predict_pb2.PredictRequest, bool]:
    """TF Serving's REST predict body -> a PredictRequest (and whether it used the row format).

    Args:
        body: ``{"signature_name"?, "instances": [...]}`` (row format: one entry per example, a
            value when the signature has one input, else ``{input: value}``) or
            ``{"signature_name"?, "inputs": {input: batch} | batch}`` (columnar format).
        name: model name from the URL.
        version: version from the URL, or ``None``.
        specs: the signature's inputs by name.
    """
    if ("instances" in body) == ("inputs" in body):
        raise _invalid('JSON object must have exactly one of "instances" or "inputs"')
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid('"instances" must be a list')
        if all(isinstance(item, dict) and "b64" not in item for item in instances) and instances:
            columns = {key: [item.get(key) for item in instances] for key in instances[0]}
        elif len(specs) == 1:
            columns = {next(iter(specs)): instances}
        else:
            raise _invalid("with several inputs, each instance must be an object {input: value}")
    else:
        inputs = body["inputs"]
        columns = inputs if isinstance(inputs, dict) and "b64" not in inputs else {next(iter(specs)): inputs}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = body.get("signature_name", "")
    if version is not None:
        request.model_spec.version.value = version
    for key, values in columns.items():
        if key not in specs:
            raise _invalid(f"input tensor alias not found in signature: {key}")
        try:
            array = _json_column(values, specs[key])
        except (ValueError, TypeError, OverflowError) as err:
            raise _invalid(f"input {key}: {err}") from None
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    return request, row_format


def rest_predict_response(response: predict_pb2.PredictResponse, row_format: bool) -> dict:
    """A PredictResponse as TF Serving's REST JSON (``predictions`` rows or ``outputs`` columns)."""
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    if row_format:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        size = len(next(iter(outputs.values())))
        return {"predictions": [{name: value[i].tolist() for name, value in outputs.items()}
                                for i in range(size)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values())).tolist()}
    return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def _to_json(message) -> dict:
    """A proto as TF Serving's REST API writes it: proto field names, default values included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _rest_handler(core: ModelServerCore, max_body_bytes: int) -> type[http.server.BaseHTTPRequestHandler]:
    """An HTTP handler class serving TF Serving's REST routes for ``core``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
            logger.debug("rest: " + format, *args)

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            match = _REST_PATH.match(self.path)
            if match is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {self.path}")
            version = int(match["version"]) if match["version"] else None
            return match["name"], version, match["verb"]

        def _spec(self, name, version):
            spec = model_pb2.ModelSpec(name=name)
            if version is not None:
                spec.version.value = version
            return spec

        def _handle(self, method: Callable[[], dict]) -> None:
            try:
                self._send(200, method())
            except ServingError as err:
                self._send(_HTTP_STATUS.get(err.code, 500), {"error": err.message})
            except Exception as err:
                logger.exception("rest request failed")
                self._send(500, {"error": f"{type(err).__name__}: {err}"})

        def do_GET(self):
            def answer():
                name, version, verb = self._route()
                spec = self._spec(name, version)
                if verb == "/metadata":
                    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec,
                                                                             metadata_field=["signature_def"])
                    response = core.metadata(request)
                    signature_map = get_model_metadata_pb2.SignatureDefMap()
                    response.metadata["signature_def"].Unpack(signature_map)
                    return {"model_spec": _to_json(response.model_spec),
                            "metadata": {"signature_def": _to_json(signature_map)}}
                if verb is None:
                    response = core.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
                    return _to_json(response)
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: GET {self.path}")
            self._handle(answer)

        def do_POST(self):
            def answer():
                length = int(self.headers.get("Content-Length") or 0)
                body_bytes = self.rfile.read(length)  # read even when refusing, to keep the connection sane
                name, version, verb = self._route()
                if verb != ":predict":
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {self.path}")
                if length > max_body_bytes:
                    raise _invalid(f"request body of {length} bytes exceeds {max_body_bytes}")
                try:
                    body = json.loads(body_bytes)
                except ValueError as err:
                    raise _invalid(f"JSON Parse error: {err}") from None
                if not isinstance(body, dict):
                    raise _invalid("JSON Value is not an object")
                _, servable = core.resolve(self._spec(name, version))
                signature = body.get("signature_name") or DEFAULT_SIGNATURE
                request, row_format = rest_predict_request(body, name, version, servable.input_specs(signature))
                return rest_predict_response(core.predict(request), row_format)
            self._handle(answer)

    return Handler


@dataclass
class ServerHandle:
    """A running server: its ports and ``stop()``.

    Attributes:
        host: the bound address.
        port: the gRPC port (the actual one when started on port 0).
        rest_port: the REST port, or ``None`` when REST is off.
        core: request handling, with ``core.models[name]`` the model managers.
    """

    host: str
    port: int
    rest_port: int | None
    core: ModelServerCore
    _grpc_server: grpc.Server
    _http_server: http.server.ThreadingHTTPServer | None

    def wait_for_version(self, version: int, model_name: str | None = None, timeout: float = 30.0) -> bool:
        """Block until ``version`` is loaded (``True``) or ``timeout`` seconds pass (``False``)."""
        manager = self.core.models[model_name or next(iter(self.core.models))]
        deadline = time.monotonic() + timeout
        while version not in manager.versions():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting requests, let running ones finish within ``grace`` seconds, then stop."""
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        self._grpc_server.stop(grace).wait()
        for manager in self.core.models.values():
            manager.stop_polling()
        self.core.scheduler.close()


def serve(model_base_path: str, model_name: str = "lba", port: int = 8500, host: str = "127.0.0.1",
          rest_port: int | None = None, max_batch_size: int = 32, batch_timeout_ms: float = 2.0,
          num_batch_threads: int | None = None, max_message_mb: int = 64, poll_seconds: float = 1.0,
          num_versions: int = 2, workers: int = 16) -> ServerHandle:
    """Load the model and start serving it; returns at once with a handle.

    The versions present at start are loaded before the port opens, as TF Serving does.

    Args:
        model_base_path: directory of version directories (``<base>/<name>``).
        model_name: the name clients put in ``model_spec.name``.
        port: gRPC port; 0 picks a free one (see ``handle.port``).
        host: address to bind; localhost unless told otherwise.
        rest_port: port of the REST API (0 picks a free one); ``None`` for no REST.
        max_batch_size: largest merged batch.
        batch_timeout_ms: longest wait for more requests to merge.
        num_batch_threads: threads running batches (default: one per CPU core, so that batches
            of a small model, which leave cores idle, overlap).
        max_message_mb: largest gRPC message either way, in MiB.
        poll_seconds: how often the base path is checked for new versions.
        num_versions: how many of the highest versions stay loaded.
        workers: gRPC handler threads.
    """
    manager = ModelManager(model_name, model_base_path, num_versions)
    manager.poll()
    manager.start_polling(poll_seconds)
    scheduler = BatchScheduler(max_batch_size, batch_timeout_ms / 1000.0,
                               num_batch_threads or os.cpu_count() or 1)
    core = ModelServerCore({model_name: manager}, scheduler)
    max_bytes = int(max_message_mb * 1024 * 1024)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", max_bytes),
                                  ("grpc.max_send_message_length", max_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    http_server = None
    if rest_port is not None:
        http_server = http.server.ThreadingHTTPServer((host, rest_port), _rest_handler(core, max_bytes))
        http_server.daemon_threads = True
        threading.Thread(target=http_server.serve_forever, name="rest", daemon=True).start()
        rest_port = http_server.server_address[1]
    logger.info("serving model %s (versions %s) from %s: gRPC on %s:%d%s", model_name, manager.versions(),
                model_base_path, host, bound, f", REST on {host}:{rest_port}" if http_server else "")
    return ServerHandle(host, bound, rest_port, core, server, http_server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lba_tf.serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", required=True, help="directory of version directories")
    parser.add_argument("--model-name", default="lba")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--rest-port", type=int, default=None, help="REST API port (default: no REST)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument("--num-batch-threads", type=int, default=None,
                        help="threads running merged batches (default: the number of CPU cores)")
    parser.add_argument("--max-message-mb", type=int, default=64)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--num-versions", type=int, default=2, help="highest versions kept loaded")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    handle = serve(args.model_base_path, args.model_name, args.port, args.host, args.rest_port,
                   args.max_batch_size, args.batch_timeout_ms, args.num_batch_threads, args.max_message_mb,
                   args.poll_seconds, args.num_versions)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    logger.info("shutting down")
    handle.stop()


if __name__ == "__main__":
    main()
