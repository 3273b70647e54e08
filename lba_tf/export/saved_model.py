"""SavedModel export of the encoder for TensorFlow Serving: signatures, warm-up requests, checks.

The export holds five signatures (see ``shared/spec/serving.md``), all ending in the model's
``embed``; preprocessing (decode, grey to three channels, Lanczos resize to uint8, ImageNet
normalisation) runs in the graph with the functions training uses, so a client sends raw pixels
or encoded files. Only stock TensorFlow ops are used: a TF Serving build without custom ops
loads it.

Layout written by :func:`export_saved_model`::

    <base>/<name>/<version>/saved_model.pb
                            variables/
                            assets.extra/tf_serving_warmup_requests
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import message

from lba_tf.data.preprocess import decode_image, normalize, resize_to_uint8
from lba_tf.data.records import MODALITY_INDEX
from lba_tf.export.versions import next_version, remove_stale_staging, staging_prefix, version_problem
from lba_tf.log import logger

SIGNATURE_NAMES = ("serving_default", "embed_visible", "embed_infrared", "embed_visible_bytes", "embed_infrared_bytes")
"""Every signature an export holds."""

OUTPUT_NAME = "embedding"
"""The one output of every signature: float32 ``[batch, D]``, L2-normalised."""

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
"""Where TF Serving looks for warm-up requests inside a version directory."""

FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
"""Ops that call back into Python: a TF Serving process has no interpreter to run them."""


class ExportVerificationError(RuntimeError):
    """A reloaded export disagrees with the in-process model or holds an op TF Serving lacks."""


def _signature_inputs(name: str) -> dict[str, tf.TensorSpec]:
    """The input specs of signature ``name``, keyed by input name."""
    if name == "serving_default":
        return {
            "images": tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
            "modality": tf.TensorSpec([None], tf.int32, name="modality"),
        }
    if name.endswith("_bytes"):
        return {"image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")}
    return {"images": tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")}


def _signature_modality(name: str) -> int | None:
    """The fixed modality of a single-modality signature (``None`` for ``serving_default``)."""
    for modality, index in MODALITY_INDEX.items():
        if name.startswith(f"embed_{modality}"):
            return index
    return None


class EmbeddingExportModule(tf.Module):
    """The model wrapped with in-graph preprocessing, one ``tf.function`` per signature.

    Args:
        model: a Keras model with ``embed(images, modality, training=False)`` taking float32
            normalised ``[B, H, W, 3]`` and int32 ``[B]`` and returning float32 ``[B, D]``.
        image_size: ``(height, width)`` the model takes; inputs of any size are resized to it.
    """

    def __init__(self, model, image_size: Sequence[int]):
        super().__init__(name="embedding_export")
        # Only the model's variables are tracked, not the Keras model itself: TF's saver would
        # otherwise trace Keras's default serving function, which assumes a one-input call().
        self._model_embed = model.embed
        self.model_variables = list(model.variables)
        self.height, self.width = (int(s) for s in image_size)

    def preprocess_pixels(self, images: tf.Tensor) -> tf.Tensor:
        """uint8 ``[B, H, W, 3]`` of any H, W -> float32 normalised ``[B, height, width, 3]``."""
        return normalize(resize_to_uint8(images, self.height, self.width))

    def preprocess_bytes(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """string ``[B]`` of encoded JPEG/PNG/BMP -> float32 normalised ``[B, height, width, 3]``."""
        resized = tf.map_fn(
            lambda data: resize_to_uint8(decode_image(data), self.height, self.width),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.height, self.width, 3], tf.uint8),
        )
        return normalize(resized)

    def embed(self, images: tf.Tensor, modality: tf.Tensor) -> dict[str, tf.Tensor]:
        """Normalised images ``[B, height, width, 3]`` and modality ``[B]`` -> ``{"embedding": [B, D]}``."""
        return {OUTPUT_NAME: tf.cast(self._model_embed(images, modality, training=False), tf.float32)}

    def signature(self, name: str) -> tf.types.experimental.ConcreteFunction:
        """The concrete function of signature ``name`` (one of :data:`SIGNATURE_NAMES`)."""
        specs = _signature_inputs(name)
        fixed = _signature_modality(name)

        def batch_modality(size: tf.Tensor) -> tf.Tensor:
            return tf.fill([size], tf.constant(fixed, tf.int32))

        if name == "serving_default":

            def serve(images, modality):
                valid = tf.reduce_all((modality == 0) | (modality == 1))
                check = tf.debugging.Assert(valid, ["modality must be 0 (visible) or 1 (infrared)"])
                with tf.control_dependencies([check]):
                    modality = tf.identity(modality)
                return self.embed(self.preprocess_pixels(images), modality)
        elif "image_bytes" in specs:

            def serve(image_bytes):
                return self.embed(self.preprocess_bytes(image_bytes), batch_modality(tf.shape(image_bytes)[0]))
        else:

            def serve(images):
                return self.embed(self.preprocess_pixels(images), batch_modality(tf.shape(images)[0]))

        return tf.function(serve, input_signature=list(specs.values())).get_concrete_function()


def _warmup_pixels(count: int, height: int, width: int) -> np.ndarray:
    """Deterministic uint8 ``[count, height, width, 3]`` gradients (warm-up and check inputs)."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    images = [
        np.stack(
            [(x * 255) // max(width - 1, 1), (y * 255) // max(height - 1, 1), np.full_like(x, (97 * i) % 256)], axis=-1
        )
        for i in range(count)
    ]
    return np.asarray(images, np.uint8)


def _encode_png(images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, C]`` -> object array ``[B]`` of PNG bytes."""
    return np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)


def sample_inputs(name: str, pixels: np.ndarray, modality: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs of signature ``name`` for uint8 ``pixels`` ``[B, H, W, 3]`` and ``modality`` ``[B]``.

    ``*_bytes`` signatures get the pixels as PNG (lossless, so the decoded pixels are ``pixels``).
    """
    if name == "serving_default":
        return {"images": pixels, "modality": np.asarray(modality, np.int32)}
    if name.endswith("_bytes"):
        return {"image_bytes": _encode_png(pixels)}
    return {"images": pixels}


def write_warmup_requests(path: str, model_name: str, image_size: Sequence[int], examples: int) -> int:
    """Write one ``PredictionLog`` per signature, each a request of ``examples`` images.

    Args:
        path: the TFRecord file to write.
        model_name: ``model_spec.name`` of the requests.
        image_size: ``(height, width)`` of the warm-up images.
        examples: images per request.

    Returns:
        The number of records written.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    pixels = _warmup_pixels(examples, *image_size)
    modality = np.arange(examples, dtype=np.int32) % 2
    with tf.io.TFRecordWriter(path) as writer:
        for name in SIGNATURE_NAMES:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = name
            for key, value in sample_inputs(name, pixels, modality).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(SIGNATURE_NAMES)


def export_saved_model(
    model,
    base_path: str,
    name: str = "lba",
    version: int | None = None,
    image_size: Sequence[int] = (288, 144),
    warmup_examples: int = 2,
    verify: bool = True,
) -> str:
    """Export ``model`` as ``<base_path>/<name>/<version>/``, a SavedModel for TF Serving.

    The version directory appears atomically and only once verified: the SavedModel is written
    under a hidden staging name beside it (see :mod:`lba_tf.export.versions`), checked there with
    :func:`verify_export`, and renamed, so a server watching ``<base_path>/<name>`` never sees a
    partial or a wrong model (TF Serving and the local server ignore names that are not
    integers). Staging directories of killed exports are removed first; those of live ones are
    kept, and their versions count as taken.

    Args:
        model: a Keras model with ``embed(images, modality, training=False)``.
        base_path: the export root (mounted at ``/models`` in TF Serving).
        name: the model name, the directory under ``base_path``.
        version: a positive integer; default one more than the highest present or being written.
        image_size: ``(height, width)`` the model takes.
        warmup_examples: images in each warm-up request (one request per signature).
        verify: reload the export and compare every signature with ``model`` before publishing it.

    Returns:
        The path of the version directory.

    Raises:
        FileExistsError: ``version`` is already present, being written, or was published by
            another export while this one was written.
        ExportVerificationError: the written export failed verification; nothing was published.
    """
    model_dir = os.path.join(base_path, name)
    os.makedirs(model_dir, exist_ok=True)
    for path in remove_stale_staging(model_dir):
        logger.info("removed %s, left by an export that was killed", path)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    problem = version_problem(model_dir, version)
    if problem:
        raise FileExistsError(problem)
    final = os.path.join(model_dir, str(version))
    module = EmbeddingExportModule(model, image_size)
    signatures = {sig: module.signature(sig) for sig in SIGNATURE_NAMES}
    staging = tempfile.mkdtemp(prefix=staging_prefix(version), dir=model_dir)
    try:
        tf.saved_model.save(module, staging, signatures=signatures)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        write_warmup_requests(os.path.join(staging, WARMUP_FILE), name, image_size, warmup_examples)
        if verify:
            differences = verify_export(staging, model, image_size, shown_as=f"{final} (not published)")
            logger.info("verified %d signatures, largest difference %.2g", len(differences), max(differences.values()))
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; the server may run as another user
        _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s (signatures: %s)", final, ", ".join(SIGNATURE_NAMES))
    return final


def _publish(staging: str, final: str) -> None:
    """Rename ``staging`` to ``final``, refusing to replace a version another export published meanwhile."""
    if os.path.exists(final):  # rename() would replace an empty directory
        raise FileExistsError(f"{final} appeared while this export was written")
    try:
        os.rename(staging, final)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(f"{final} appeared while this export was written") from None
        raise


def list_graph_ops(path: str) -> set[str]:
    """Every op type in a SavedModel's graphs, including the ops inside its functions.

    A direct call of a library function appears as a node whose op is the function's name; those
    are not ops and are left out.

    Args:
        path: a SavedModel directory.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops: set[str] = set()
    functions: set[str] = set()
    for meta_graph in saved.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions


def unavailable_ops(ops: set[str]) -> set[str]:
    """The ops of ``ops`` that a stock TF Serving cannot run: Python callbacks or unregistered ops."""
    from tensorflow.python.framework import op_def_registry

    return {op for op in ops if op in FORBIDDEN_OPS or op_def_registry.get(op) is None}


def reference_embeddings(model, name: str, inputs: Mapping[str, np.ndarray], image_size: Sequence[int]) -> np.ndarray:
    """What signature ``name`` must return, computed eagerly with the in-process ``model``.

    Args:
        model: the Keras model that was exported.
        name: a signature name.
        inputs: that signature's inputs (see :func:`sample_inputs`).
        image_size: ``(height, width)`` the model takes.
    """
    height, width = image_size
    if "image_bytes" in inputs:
        pixels = tf.stack([resize_to_uint8(decode_image(tf.constant(b)), height, width) for b in inputs["image_bytes"]])
        batch = len(inputs["image_bytes"])
    else:
        pixels = resize_to_uint8(tf.constant(inputs["images"]), height, width)
        batch = len(inputs["images"])
    fixed = _signature_modality(name)
    modality = inputs["modality"] if fixed is None else np.full([batch], fixed, np.int32)
    return np.asarray(model.embed(normalize(pixels), tf.constant(modality, tf.int32), training=False))


def verify_export(
    path: str,
    model,
    image_size: Sequence[int] = (288, 144),
    batch: int = 3,
    atol: float = 1e-5,
    seed: int = 0,
    shown_as: str | None = None,
) -> dict[str, float]:
    """Reload an export and check every signature against the in-process model.

    Each signature gets ``batch`` random images of a size other than ``image_size`` (so the
    in-graph resize is exercised) with mixed modalities for ``serving_default``.

    Args:
        path: a SavedModel directory (a version directory, or one being written).
        model: the exported Keras model.
        image_size: ``(height, width)`` the model takes.
        batch: images per check.
        atol: largest allowed absolute difference of an embedding value. Measured on a ResNet-50
            at 288 x 144: 1.5e-8 with oneDNN off, 3e-8 with it on, and 2.7e-8 for an export
            written with oneDNN off and served with it on (values ~0.016): the default holds
            for either kernel path with a margin of 300.
        seed: seed of the random images.
        shown_as: how error messages name the export (default ``path``).

    Returns:
        The largest absolute difference per signature.

    Raises:
        ExportVerificationError: the export does not load, a signature is missing, differs by
            more than ``atol`` or has the wrong shape, or the graph holds ops a stock TF
            Serving lacks.
    """
    shown = shown_as or path
    try:
        bad_ops = unavailable_ops(list_graph_ops(path))
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError, message.DecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportVerificationError(f"{shown}: the SavedModel does not load: {reason}") from None
    if bad_ops:
        raise ExportVerificationError(f"{shown}: ops a stock TF Serving lacks: {sorted(bad_ops)}")
    missing = set(SIGNATURE_NAMES) - set(loaded.signatures)
    if missing:
        raise ExportVerificationError(f"{shown}: missing signatures {sorted(missing)}")
    height, width = image_size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, height + 7, width + 3, 3), np.uint8)
    modality = np.arange(batch, dtype=np.int32) % 2
    differences = {}
    for name in SIGNATURE_NAMES:
        inputs = sample_inputs(name, pixels, modality)
        got = _call_signature(loaded.signatures[name], inputs)
        want = reference_embeddings(model, name, inputs, image_size)
        if got.shape != want.shape:
            raise ExportVerificationError(f"{shown}: {name} returned {got.shape}, expected {want.shape}")
        differences[name] = float(np.max(np.abs(got - want)))
        if differences[name] > atol:
            raise ExportVerificationError(
                f"{shown}: {name} differs from the in-process model by {differences[name]:.3g} > {atol}"
            )
    return differences


def _call_signature(function: Callable, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run a loaded signature on numpy inputs and return its embedding."""
    return function(**{key: tf.constant(value) for key, value in inputs.items()})[OUTPUT_NAME].numpy()
