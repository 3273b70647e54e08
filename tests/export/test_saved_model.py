"""SavedModel export: layout and versions, atomic appearance, signatures, parity, warm-up, ops."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from lba_tf.export import saved_model as export
from lba_tf.export import versions
from lba_tf.export.saved_model import (
    SIGNATURE_NAMES,
    WARMUP_FILE,
    ExportVerificationError,
    export_saved_model,
    list_graph_ops,
    reference_embeddings,
    unavailable_ops,
    verify_export,
)
from tests.serving.standin import IMAGE_SIZE, StandInEncoder


@pytest.fixture(scope="module")
def model():
    return StandInEncoder(seed=0)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_saved_model(model, str(tmp_path_factory.mktemp("exports")), "lba", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def test_layout_has_a_versioned_savedmodel_and_warmup(exported):
    assert os.path.basename(exported) == "1"
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert os.path.isdir(os.path.join(exported, "variables"))
    assert os.path.isfile(os.path.join(exported, WARMUP_FILE))
    assert os.listdir(os.path.dirname(exported)) == ["1"]  # no staging directory left behind


@pytest.fixture
def nothing_written(monkeypatch):
    """Exports that write, and check, nothing but their directories (for the version bookkeeping)."""
    monkeypatch.setattr(export.EmbeddingExportModule, "signature", lambda self, name: None)
    monkeypatch.setattr(export.tf.saved_model, "save", lambda module, path, signatures: None)
    monkeypatch.setattr(export, "write_warmup_requests", lambda *args: 0)
    monkeypatch.setattr(export, "verify_export", lambda *args, **kwargs: {"serving_default": 0.0})


def test_versions_count_up_from_the_highest_present(model, tmp_path, nothing_written):
    base = str(tmp_path)
    first = export_saved_model(model, base, "m", image_size=IMAGE_SIZE)
    explicit = export_saved_model(model, base, "m", version=7, image_size=IMAGE_SIZE)
    os.makedirs(os.path.join(base, "m", "not-a-version"))
    after = export_saved_model(model, base, "m", image_size=IMAGE_SIZE)
    assert [os.path.basename(p) for p in (first, explicit, after)] == ["1", "7", "8"]
    with pytest.raises(FileExistsError):
        export_saved_model(model, base, "m", version=7, image_size=IMAGE_SIZE)


def test_version_directory_appears_only_when_complete_and_verified(model, tmp_path, monkeypatch):
    real_save, real_verify = tf.saved_model.save, export.verify_export
    seen = {}

    def watching_save(module, path, signatures):
        real_save(module, path, signatures=signatures)
        # the SavedModel is fully written, yet nothing under an integer name is visible
        seen["saved"] = path, os.listdir(tmp_path / "lba")

    def watching_verify(path, *args, **kwargs):
        seen["verified"] = path, os.listdir(tmp_path / "lba")
        return real_verify(path, *args, **kwargs)

    monkeypatch.setattr(export.tf.saved_model, "save", watching_save)
    monkeypatch.setattr(export, "verify_export", watching_verify)
    final = export_saved_model(model, str(tmp_path), "lba", image_size=IMAGE_SIZE)
    staging = seen["saved"][0]
    assert os.path.basename(staging).startswith(".") and os.path.dirname(staging) == str(tmp_path / "lba")
    # written, then checked, under the hidden name alone
    assert seen["saved"] == seen["verified"] == (staging, [os.path.basename(staging)])
    assert not os.path.exists(staging) and os.listdir(tmp_path / "lba") == ["1"]
    assert os.path.isfile(os.path.join(final, "saved_model.pb"))


def test_an_export_removes_what_a_killed_export_left(model, tmp_path, nothing_written):
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    left = tmp_path / "lba" / f".1.tmp-{versions.this_host()}-{gone}-k2j4h5g6"
    (left / "variables").mkdir(parents=True)
    running = tmp_path / "lba" / f".2.tmp-{versions.this_host()}-{os.getpid()}-a1b2c3d4"
    running.mkdir()
    assert export_saved_model(model, str(tmp_path), "lba", image_size=IMAGE_SIZE) == str(tmp_path / "lba" / "3")
    assert sorted(os.listdir(tmp_path / "lba")) == sorted(["3", running.name])  # version 1's leftovers gone


def test_a_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    def failing_save(module, path, signatures):
        open(os.path.join(path, "saved_model.pb"), "wb").close()
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.tf.saved_model, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, str(tmp_path), "lba", image_size=IMAGE_SIZE)
    assert os.listdir(tmp_path / "lba") == []


_save = tf.saved_model.save  # the real one, for the stand-ins below that the tests put in its place


def _another_model_saved(module, path, signatures):
    """What a bad write would leave: a loadable SavedModel of other weights."""
    other = export.EmbeddingExportModule(StandInEncoder(seed=5), IMAGE_SIZE)
    _save(other, path, signatures={name: other.signature(name) for name in SIGNATURE_NAMES})


def _truncated_graph_saved(module, path, signatures):
    _save(module, path, signatures=signatures)
    with open(os.path.join(path, "saved_model.pb"), "r+b") as f:
        f.truncate(100)


@pytest.mark.parametrize(
    "save, message",
    [(_another_model_saved, "differs from the in-process model"), (_truncated_graph_saved, "does not load")],
)
def test_an_export_failing_verification_is_never_published(model, tmp_path, monkeypatch, save, message):
    (tmp_path / "lba" / "1").mkdir(parents=True)  # an earlier version, which stays the latest
    monkeypatch.setattr(export.tf.saved_model, "save", save)
    with pytest.raises(ExportVerificationError, match=message) as info:
        export_saved_model(model, str(tmp_path), "lba", image_size=IMAGE_SIZE)
    assert str(info.value).startswith(f"{tmp_path / 'lba' / '2'} (not published): ")
    assert os.listdir(tmp_path / "lba") == ["1"]  # no version 2, no staging directory


def test_signatures_have_the_contract_inputs_and_outputs(loaded):
    want = {
        "serving_default": {"images": (tf.uint8, [None, None, None, 3]), "modality": (tf.int32, [None])},
        "embed_visible": {"images": (tf.uint8, [None, None, None, 3])},
        "embed_infrared": {"images": (tf.uint8, [None, None, None, 3])},
        "embed_visible_bytes": {"image_bytes": (tf.string, [None])},
        "embed_infrared_bytes": {"image_bytes": (tf.string, [None])},
    }
    assert set(loaded.signatures) == set(want)
    for name, inputs in want.items():
        function = loaded.signatures[name]
        specs = function.structured_input_signature[1]
        assert {k: (s.dtype, s.shape.as_list()) for k, s in specs.items()} == inputs
        out = function.structured_outputs
        assert list(out) == ["embedding"] and out["embedding"].dtype == tf.float32
        assert out["embedding"].shape.as_list() == [None, 8]


def test_verify_export_matches_every_signature(exported, model):
    differences = verify_export(exported, model, IMAGE_SIZE, batch=3)
    assert set(differences) == set(SIGNATURE_NAMES)
    assert max(differences.values()) <= 1e-5


def test_verify_export_catches_another_model(exported):
    with pytest.raises(ExportVerificationError, match="differs from the in-process model"):
        verify_export(exported, StandInEncoder(seed=5), IMAGE_SIZE, batch=2)


def test_served_preprocessing_equals_training_preprocessing(loaded, model):
    # Inputs at a size other than the model's: resized in the graph exactly as in training.
    pixels = np.random.default_rng(1).integers(0, 256, (2, 50, 23, 3), np.uint8)
    got = loaded.signatures["embed_infrared"](images=tf.constant(pixels))["embedding"].numpy()
    from lba_tf.data.preprocess import normalize, resize_to_uint8

    want = model.embed(normalize(resize_to_uint8(pixels, *IMAGE_SIZE)), np.ones(2, np.int32))
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_mixed_modalities_each_take_their_stem(loaded):
    image = np.random.default_rng(2).integers(0, 256, (1, 32, 16, 3), np.uint8)
    batch = np.repeat(image, 4, axis=0)
    mixed = loaded.signatures["serving_default"](
        images=tf.constant(batch), modality=tf.constant([0, 1, 1, 0], tf.int32)
    )["embedding"].numpy()
    visible = loaded.signatures["embed_visible"](images=tf.constant(image))["embedding"].numpy()[0]
    infrared = loaded.signatures["embed_infrared"](images=tf.constant(image))["embedding"].numpy()[0]
    assert np.abs(visible - infrared).max() > 1e-2  # the two stems differ, so the check below can fail
    np.testing.assert_allclose(mixed, np.stack([visible, infrared, infrared, visible]), atol=1e-6)


def test_modality_outside_zero_one_is_rejected(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="modality must be 0"):
        loaded.signatures["serving_default"](
            images=tf.zeros([1, 32, 16, 3], tf.uint8), modality=tf.constant([2], tf.int32)
        )


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_grey_encoded_files_are_decoded_to_three_channels(loaded, model, fmt):
    grey = np.random.default_rng(3).integers(0, 256, (37, 19), np.uint8)
    data = _encode(grey, fmt)
    got = loaded.signatures["embed_infrared_bytes"](image_bytes=tf.constant([data]))["embedding"].numpy()
    want = reference_embeddings(model, "embed_infrared_bytes", {"image_bytes": [data]}, IMAGE_SIZE)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if fmt != "JPEG":  # lossless: the same as sending the grey pixels replicated to RGB
        rgb = np.repeat(grey[None, :, :, None], 3, axis=-1)
        pixels = loaded.signatures["embed_infrared"](images=tf.constant(rgb))["embedding"].numpy()
        np.testing.assert_allclose(got, pixels, atol=1e-6)


def test_warmup_file_holds_one_predict_request_per_signature(exported, loaded):
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(os.path.join(exported, WARMUP_FILE))
    ]
    assert sorted(log.predict_log.request.model_spec.signature_name for log in records) == sorted(SIGNATURE_NAMES)
    for log in records:
        request = log.predict_log.request
        assert log.WhichOneof("log_type") == "predict_log" and request.model_spec.name == "lba"
        function = loaded.signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(function.structured_input_signature[1])
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = function(**inputs)["embedding"].numpy()
        assert out.shape == (2, 8) and np.isfinite(out).all()


def test_graph_has_only_stock_ops(exported):
    ops = list_graph_ops(exported)
    # preprocessing (the decoders, PIL's Lanczos as fixed-point weights and matmuls) and the model
    assert {"DecodeJpeg", "DecodeBmp", "DecodeImage", "ScatterNd", "Einsum", "Conv2D"} <= ops
    assert not ops & export.FORBIDDEN_OPS
    assert unavailable_ops(ops) == set()


def test_list_graph_ops_finds_a_py_function(tmp_path):
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(lambda v: v + 1, [x], tf.float32), input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    ops = list_graph_ops(str(tmp_path))
    assert "EagerPyFunc" in ops and unavailable_ops(ops) == {"EagerPyFunc"}
    assert unavailable_ops({"Conv2D", "MyCustomOp"}) == {"MyCustomOp"}


def test_the_lba_model_exports_and_matches(tmp_path):
    from lba_tf.models.lba import LbAModel

    model = LbAModel(num_classes=4, depth=18, width=8, method="baseline").build_for(*IMAGE_SIZE)
    path = export_saved_model(model, str(tmp_path), "lba", image_size=IMAGE_SIZE, warmup_examples=1, verify=False)
    differences = verify_export(path, model, IMAGE_SIZE, batch=2)
    assert max(differences.values()) <= 1e-5
    assert unavailable_ops(list_graph_ops(path)) == set()
