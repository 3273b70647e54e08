"""One loaded version of a SavedModel: its signatures, their SignatureDefs, its warm-up replay."""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from lba_tf.export.saved_model import WARMUP_FILE
from lba_tf.serving.errors import ServingError, status_of
from lba_tf.serving.inputs import parse_inputs

DEFAULT_SIGNATURE = "serving_default"
"""The signature of a request that names none."""


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
        """The inputs of ``signature`` by name.

        Raises:
            ServingError: FAILED_PRECONDITION when there is no such signature, as TF Serving's
                Predict (``servables/tensorflow/predict_util.cc``).
        """
        if signature not in self.signatures:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature}" not found.')
        return dict(self.signatures[signature].structured_input_signature[1])

    def output_names(self, signature: str) -> list[str]:
        """The output names of ``signature``."""
        return sorted(self.signatures[signature].structured_outputs)

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``signature`` on validated numpy inputs; a TF runtime error becomes ``ServingError``."""
        try:
            outputs = self.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as err:
            raise status_of(err) from None
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
