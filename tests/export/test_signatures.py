"""Every signature of an exported LbA model, on every kind of batch, equals the in-process model.

The model is the real two-stream ``LbAModel`` (not the serving stand-in, which routes by a
per-row select): its encoder partitions a mixed batch and runs one stem on a single-modality
one, so this is where a kernel's handling of a single-modality or empty batch would show. The
suite runs once per kernel mode (``TF_ENABLE_ONEDNN_OPTS=0`` and ``=1``, see ``.ci/run``);
``test_kernel_mode_is_the_one_asked_for`` makes sure each run tests the mode it names.

The in-process reference embeds each image alone, eagerly, through the stem of its modality, so
it shares no batching or routing with the export.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lba_tf.data.preprocess import decode_image, normalize, resize_to_uint8
from lba_tf.export.saved_model import export_saved_model
from lba_tf.models.lba import LbAModel
from lba_tf.runtime import onednn_enabled

IMAGE_SIZE = (32, 16)
BATCHES = {"visible": [0, 0, 0], "infrared": [1, 1, 1], "mixed": [1, 0, 0, 1, 0]}
# The export runs the graph (with grappler's and, with oneDNN, its conv + BatchNorm fusions) on
# a whole batch; the reference runs eagerly on single images. Both are float32 sums of at most
# 3 x 3 x 64 = 576 terms per convolution, 18 layers deep. Measured over 5 seeds of the batches
# below: at most 2.3e-7 (oneDNN off) and 1.6e-7 (on) on unit-length embeddings of 128 values
# (mean magnitude 0.09). 1e-5 is 40 times that; a wrong stem moves them by 6e-2 to 1.2e-1.
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    model = LbAModel(num_classes=4, depth=18, width=8, method="baseline", name="lba")
    return model.build_for(*IMAGE_SIZE)


@pytest.fixture(scope="module")
def export_path(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))  # the tests below compare every signature themselves
    return export_saved_model(model, base, "lba", image_size=IMAGE_SIZE, warmup_examples=1, verify=False)


@pytest.fixture(scope="module")
def signatures(export_path):
    return tf.saved_model.load(export_path).signatures


def _pixels(count: int, seed: int) -> np.ndarray:
    # not the model's size, so that the in-graph resize runs too
    return np.random.default_rng(seed).integers(0, 256, (count, 37, 19, 3), np.uint8)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _reference(model, pixels: np.ndarray, modality) -> np.ndarray:
    """Each image embedded alone, eagerly, ``[B, D]``."""
    rows = [
        model.embed(normalize(resize_to_uint8(tf.constant(image[None]), *IMAGE_SIZE)), tf.constant([m], tf.int32))[0]
        for image, m in zip(pixels, modality)
    ]
    return np.stack(rows) if rows else np.zeros((0, model.encoder.layer4_channels), np.float32)


def test_kernel_mode_is_the_one_asked_for():
    wanted = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if wanted not in ("0", "1"):
        pytest.skip("TF_ENABLE_ONEDNN_OPTS is not set: this machine's default kernels")
    assert onednn_enabled() == (wanted == "1")


def test_the_two_stems_give_different_embeddings(model):
    # otherwise a routing mistake could not fail the tests below
    pixels = _pixels(1, 0)
    visible, infrared = _reference(model, pixels, [0]), _reference(model, pixels, [1])
    assert np.abs(visible - infrared).max() > 100 * ATOL


@pytest.mark.parametrize("kind", list(BATCHES) + ["empty"])
def test_serving_default(signatures, model, kind):
    modality = np.array(BATCHES.get(kind, []), np.int32)
    pixels = _pixels(len(modality), 1)
    got = signatures["serving_default"](images=tf.constant(pixels, tf.uint8), modality=tf.constant(modality))[
        "embedding"
    ].numpy()
    np.testing.assert_allclose(got, _reference(model, pixels, modality), atol=ATOL, rtol=0)


@pytest.mark.parametrize("count", [3, 1, 0])
@pytest.mark.parametrize("modality_name, modality", [("visible", 0), ("infrared", 1)])
def test_embed_pixels(signatures, model, modality_name, modality, count):
    pixels = _pixels(count, 2)
    got = signatures[f"embed_{modality_name}"](images=tf.constant(pixels, tf.uint8))["embedding"].numpy()
    np.testing.assert_allclose(got, _reference(model, pixels, [modality] * count), atol=ATOL, rtol=0)


@pytest.mark.parametrize("count", [3, 1, 0])
@pytest.mark.parametrize("modality_name, modality", [("visible", 0), ("infrared", 1)])
def test_embed_bytes(signatures, model, modality_name, modality, count):
    pixels = _pixels(count, 3)
    encoded = tf.constant([_png(image) for image in pixels], tf.string, shape=[count])
    got = signatures[f"embed_{modality_name}_bytes"](image_bytes=encoded)["embedding"].numpy()
    decoded = np.stack([decode_image(tf.constant(_png(image))).numpy() for image in pixels]) if count else pixels
    np.testing.assert_array_equal(decoded, pixels)  # PNG is lossless: the same pixels reach the model
    np.testing.assert_allclose(got, _reference(model, pixels, [modality] * count), atol=ATOL, rtol=0)


def _camera_file(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    (pil.convert("P", palette=Image.ADAPTIVE) if fmt == "BMP" else pil).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "BMP"])
def test_embed_bytes_decodes_and_resizes_as_pil(signatures, model, fmt):
    # The authors' pipeline: PIL decodes the file and resizes it with Lanczos (ANTIALIAS). A JPEG
    # (lossy, so the IDCT matters) and an 8-bit palette BMP reach the model as PIL's pixels.
    encoded = [_camera_file(image, fmt) for image in _pixels(2, 4)]
    pil = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(IMAGE_SIZE[::-1], Image.LANCZOS))
        for data in encoded
    ]
    for data, expected in zip(encoded, pil):
        np.testing.assert_array_equal(resize_to_uint8(decode_image(tf.constant(data)), *IMAGE_SIZE).numpy(), expected)
    got = signatures["embed_infrared_bytes"](image_bytes=tf.constant(encoded))["embedding"].numpy()
    np.testing.assert_allclose(got, _reference(model, np.stack(pil), [1, 1]), atol=ATOL, rtol=0)


_SERVE_IN_OTHER_MODE = """
import json, sys
import numpy as np, tensorflow as tf
from lba_tf.runtime import onednn_enabled
path, pixels_file = sys.argv[1:3]
pixels = np.load(pixels_file)
serve = tf.saved_model.load(path).signatures["serving_default"]
out = {kind: serve(images=tf.constant(pixels[:len(m)]), modality=tf.constant(m, tf.int32))["embedding"].numpy().tolist()
       for kind, m in json.loads(sys.argv[3]).items()}
print(json.dumps({"onednn": onednn_enabled(), "embeddings": out}))
"""


def test_an_export_serves_in_the_other_kernel_mode(export_path, model, tmp_path):
    """Exported here, served by a process whose kernels are the other kind (as when a model
    exported on an AVX2 machine is served on an AVX-512 one)."""
    other = "0" if onednn_enabled() else "1"
    batches = {**BATCHES, "empty": []}
    pixels = _pixels(max(len(m) for m in batches.values()), 4)
    np.save(tmp_path / "pixels.npy", pixels)
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": other, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_IN_OTHER_MODE, export_path, str(tmp_path / "pixels.npy"), json.dumps(batches)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    served = json.loads(done.stdout.splitlines()[-1])
    assert served["onednn"] == (other == "1")
    for kind, modality in batches.items():
        got = np.asarray(served["embeddings"][kind], np.float32).reshape(len(modality), model.encoder.layer4_channels)
        np.testing.assert_allclose(
            got, _reference(model, pixels[: len(modality)], modality), atol=ATOL, rtol=0, err_msg=kind
        )
