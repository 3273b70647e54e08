"""Servable: one loaded export version, its signatures run as the in-process model, its warm-up replayed."""

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf

from lba_tf.export.saved_model import SIGNATURE_NAMES, reference_embeddings, sample_inputs
from lba_tf.serving.errors import ServingError
from lba_tf.serving.servable import Servable
from tests.serving.standin import IMAGE_SIZE

PIXELS = np.random.default_rng(1).integers(0, 256, (2, 35, 17, 3), np.uint8)
MODALITY = np.array([0, 1], np.int32)


def test_signatures_and_their_defs(servable):
    assert servable.version == 1
    assert set(SIGNATURE_NAMES) <= set(servable.signatures)
    assert set(SIGNATURE_NAMES) <= set(servable.signature_defs.signature_def)
    assert servable.output_names("embed_visible") == ["embedding"]
    specs = servable.input_specs("serving_default")
    assert {name: spec.dtype for name, spec in specs.items()} == {"images": tf.uint8, "modality": tf.int32}


def test_unknown_signature_is_failed_precondition(servable):
    # TF Serving's Predict (servables/tensorflow/predict_util.cc); REST checks first, as INVALID_ARGUMENT
    with pytest.raises(ServingError) as info:
        servable.input_specs("embed_thermal")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == 'Serving signature key "embed_thermal" not found.'


@pytest.mark.parametrize("signature", SIGNATURE_NAMES)
def test_run_equals_the_in_process_model(servable, standin_model, signature):
    inputs = sample_inputs(signature, PIXELS, MODALITY)
    outputs = servable.run(signature, inputs)
    assert list(outputs) == ["embedding"]
    np.testing.assert_allclose(
        outputs["embedding"], reference_embeddings(standin_model, signature, inputs, IMAGE_SIZE), atol=1e-5
    )


def test_runtime_error_keeps_its_status(servable):
    with pytest.raises(ServingError) as info:
        servable.run("embed_visible_bytes", {"image_bytes": np.array([b"not an image"], object)})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_warm_up_replays_one_request_per_signature(servable):
    assert servable.warm_up() == len(SIGNATURE_NAMES)


def test_version_without_warm_up_requests_replays_none(export_base, tmp_path):
    shutil.copytree(export_base / "lba" / "1", tmp_path / "1", ignore=shutil.ignore_patterns("assets.extra"))
    assert Servable(str(tmp_path / "1"), 1).warm_up() == 0
