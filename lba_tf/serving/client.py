"""Client of the served encoder: embeddings over gRPC, and cross-modality search of a gallery.

Only the standard ``PredictionService`` calls (``Predict``, ``GetModelMetadata``) are used, so
the same commands work against TensorFlow Serving and against ``lba_tf.serving.server``.

    python -m lba_tf.serving.client embed --server localhost:8500 --modality visible a.jpg b.jpg --out emb.npy
    python -m lba_tf.serving.client search --server localhost:8500 --gallery ir_gallery/ \\
        --gallery-modality infrared --query a.jpg --top-k 10 --out ranked.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence

import grpc
import numpy as np

from lba_tf.log import import_tensorflow_quietly

import_tensorflow_quietly()  # its CUDA stub prints at load time otherwise
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from lba_tf.data.records import MODALITY_INDEX  # noqa: E402
from lba_tf.export.saved_model import OUTPUT_NAME  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def connect(server: str, max_message_mb: int = 64) -> prediction_service_pb2_grpc.PredictionServiceStub:
    """A PredictionService stub on an insecure channel to ``host:port``.

    Args:
        server: ``host:port`` of TF Serving or the local server.
        max_message_mb: largest message either way, in MiB (TF Serving's default cap is 4 MiB
            for receiving on the client side unless raised here).
    """
    size = int(max_message_mb * 1024 * 1024)
    channel = grpc.insecure_channel(
        server, options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]
    )
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def modality_index(modality: str | int) -> int:
    """``"visible"``/``"infrared"`` (or 0/1) -> 0/1."""
    if isinstance(modality, str):
        if modality not in MODALITY_INDEX:
            raise ValueError(f"modality must be one of {sorted(MODALITY_INDEX)}, got {modality!r}")
        return MODALITY_INDEX[modality]
    if int(modality) not in MODALITY_INDEX.values():
        raise ValueError(f"modality must be 0 (visible) or 1 (infrared), got {modality}")
    return int(modality)


def other_modality(modality: str) -> str:
    """The modality a query of ``modality`` is searched against."""
    return next(name for name in MODALITY_INDEX if name != modality)


def model_version(stub, model_name: str, timeout: float = 30.0) -> int:
    """The version the server answers with when none is asked for (the latest)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model_name
    return stub.GetModelMetadata(request, timeout=timeout).model_spec.version.value


def predict(
    stub,
    model_name: str,
    signature: str,
    inputs: dict[str, np.ndarray],
    version: int | None = None,
    timeout: float = 60.0,
) -> np.ndarray:
    """One Predict call; returns the ``embedding`` output ``[batch, D]``.

    Args:
        stub: a PredictionService stub.
        model_name: ``model_spec.name``.
        signature: ``model_spec.signature_name``.
        inputs: numpy arrays by input name.
        version: a specific version, or ``None`` for the latest.
        timeout: seconds before the call fails with DEADLINE_EXCEEDED.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, timeout=timeout)
    return tf.make_ndarray(response.outputs[OUTPUT_NAME])


def _three_channels(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` -> ``[H, W, 3]``."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _chunks(shapes: Sequence[tuple], batch_size: int) -> list[slice]:
    """Runs of consecutive items with equal shapes, at most ``batch_size`` long."""
    chunks, start = [], 0
    for i in range(1, len(shapes) + 1):
        if i == len(shapes) or i - start == batch_size or shapes[i] != shapes[start]:
            chunks.append(slice(start, i))
            start = i
    return chunks


def embed_images(
    stub,
    model_name: str,
    images: Sequence[np.ndarray] | np.ndarray | None = None,
    image_bytes: Sequence[bytes] | None = None,
    modality: str | int | Sequence = "visible",
    batch_size: int = 16,
    version: int | None = None,
    timeout: float = 60.0,
) -> np.ndarray:
    """Embeddings of images from the served model, in batches.

    Give either ``images`` (uint8 pixels, sent to ``embed_<modality>``, or to ``serving_default``
    when ``modality`` has one entry per image) or ``image_bytes`` (encoded JPEG/PNG/BMP files,
    sent to ``embed_<modality>_bytes`` and decoded by the server).

    Args:
        stub: a PredictionService stub (:func:`connect`).
        model_name: the served model's name.
        images: ``[N, H, W, 3]`` uint8, or a list of ``[H, W, 3]`` / ``[H, W]`` arrays of any
            sizes (consecutive images of one size share a request).
        image_bytes: a list of encoded files.
        modality: ``"visible"``/``"infrared"``/0/1 for every image, or a sequence with one per
            image (pixels only).
        batch_size: images per request.
        version: a specific model version, or ``None`` for the latest.
        timeout: seconds per request.

    Returns:
        float32 ``[N, D]``, L2-normalised.
    """
    if (images is None) == (image_bytes is None):
        raise ValueError("give exactly one of images and image_bytes")
    per_image = not isinstance(modality, (str, int, np.integer))
    if image_bytes is not None:
        if per_image:
            raise ValueError("encoded images take one modality for the whole call")
        items = [bytes(b) for b in image_bytes]
        shapes = [()] * len(items)
    else:
        items = [_three_channels(image) for image in images]
        shapes = [image.shape for image in items]
    if per_image:
        codes = np.array([modality_index(m) for m in modality], np.int32)
        if len(codes) != len(items):
            raise ValueError(f"{len(codes)} modalities for {len(items)} images")
    else:
        name = next(n for n, i in MODALITY_INDEX.items() if i == modality_index(modality))
    parts = []
    for chunk in _chunks(shapes, batch_size):
        if image_bytes is not None:
            signature, inputs = f"embed_{name}_bytes", {"image_bytes": np.array(items[chunk], dtype=object)}
        elif per_image:
            signature, inputs = "serving_default", {"images": np.stack(items[chunk]), "modality": codes[chunk]}
        else:
            signature, inputs = f"embed_{name}", {"images": np.stack(items[chunk])}
        parts.append(predict(stub, model_name, signature, inputs, version, timeout))
    if not parts:
        raise ValueError("no images to embed")
    return np.concatenate(parts).astype(np.float32)


def read_pixels(path: str) -> np.ndarray:
    """A file's pixels as uint8 ``[H, W, 3]`` (grey replicated to three channels)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def embed_files(
    stub,
    model_name: str,
    paths: Sequence[str],
    modality: str,
    send: str = "bytes",
    batch_size: int = 16,
    version: int | None = None,
) -> np.ndarray:
    """Embeddings of image files: their bytes (decoded by the server) or their pixels.

    Args:
        send: ``"bytes"`` for the ``*_bytes`` signatures, ``"pixels"`` to decode here with Pillow.
    """
    if send == "bytes":
        return embed_images(
            stub,
            model_name,
            image_bytes=[read_bytes(p) for p in paths],
            modality=modality,
            batch_size=batch_size,
            version=version,
        )
    return embed_images(
        stub,
        model_name,
        images=[read_pixels(p) for p in paths],
        modality=modality,
        batch_size=batch_size,
        version=version,
    )


def list_images(directory: str) -> list[str]:
    """Image files under ``directory`` (recursively), sorted."""
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(directory)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    return sorted(found)


def gallery_cache_path(cache_dir: str, model_name: str, version: int, modality: str, paths: Sequence[str]) -> str:
    """The cache file of a gallery's embeddings, keyed by model version and the file list.

    A file's size and modification time are part of the key, so an edited image is re-embedded.
    """
    listing = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    digest = hashlib.sha256(json.dumps([model_name, version, modality, listing]).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f".lba-gallery-{model_name}-v{version}-{modality}-{digest}.npz")


def gallery_embeddings(
    stub,
    model_name: str,
    directory: str,
    modality: str,
    cache_dir: str | None = None,
    send: str = "bytes",
    batch_size: int = 16,
) -> tuple[list[str], np.ndarray, int]:
    """Embeddings of every image in a gallery folder, from the cache when it is current.

    Args:
        directory: the gallery folder.
        modality: the gallery images' modality.
        cache_dir: where the ``.npz`` cache lives (default: the gallery folder).

    Returns:
        ``(paths, embeddings [G, D], version)``; ``version`` is the model version used, to be
        used for the queries too.
    """
    paths = list_images(directory)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {directory}")
    version = model_version(stub, model_name)
    cache = gallery_cache_path(cache_dir or directory, model_name, version, modality, paths)
    if os.path.exists(cache):
        with np.load(cache) as data:
            return paths, data["embeddings"], version
    embeddings = embed_files(stub, model_name, paths, modality, send, batch_size, version)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, embeddings=embeddings, paths=np.array(paths))
    return paths, embeddings, version


def rank_gallery(queries: np.ndarray, gallery: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` gallery items most similar to each query by dot product.

    Args:
        queries: ``[Q, D]`` embeddings.
        gallery: ``[G, D]`` embeddings.
        top_k: list length (at most G).

    Returns:
        ``(indices [Q, k], scores [Q, k])``, best first; ties keep gallery order.
    """
    scores = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    k = min(int(top_k), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def render_ranked_lists(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    indices: np.ndarray,
    scores: np.ndarray,
    out_path: str,
    thumb_size: tuple[int, int] = (128, 64),
) -> None:
    """A PNG with one row per query: the query, then its ranked gallery thumbnails and scores.

    Args:
        query_paths: ``Q`` query files.
        gallery_paths: the gallery files ``indices`` point into.
        indices: ``[Q, k]`` ranked gallery indices.
        scores: ``[Q, k]`` their scores.
        out_path: the PNG to write.
        thumb_size: ``(height, width)`` of each thumbnail.
    """
    from PIL import Image, ImageDraw

    height, width = thumb_size
    pad, text = 6, 14
    columns = indices.shape[1] + 1
    canvas = Image.new(
        "RGB", (columns * (width + pad) + 2 * pad, len(query_paths) * (height + text + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for row, query in enumerate(query_paths):
        top = pad + row * (height + text + pad)
        cells = [(query, "query")] + [(gallery_paths[i], f"{s:.3f}") for i, s in zip(indices[row], scores[row])]
        for col, (path, label) in enumerate(cells):
            left = pad + col * (width + pad) + (pad if col else 0)
            with Image.open(path) as image:
                canvas.paste(image.convert("RGB").resize((width, height)), (left, top))
            if col == 0:
                draw.rectangle([left - 2, top - 2, left + width + 1, top + height + 1], outline=(30, 90, 200), width=2)
            draw.text((left + 2, top + height + 1), label, fill=(0, 0, 0))
    canvas.save(out_path, format="PNG")


def _embed_command(args) -> None:
    stub = connect(args.server, args.max_message_mb)
    embeddings = embed_files(stub, args.model, args.images, args.modality, args.send, args.batch_size, args.version)
    np.save(args.out, embeddings)
    print(f"{len(embeddings)} embeddings of size {embeddings.shape[1]} -> {args.out}")


def _search_command(args) -> None:
    stub = connect(args.server, args.max_message_mb)
    paths, gallery, version = gallery_embeddings(
        stub, args.model, args.gallery, args.gallery_modality, args.cache_dir, args.send, args.batch_size
    )
    query_modality = other_modality(args.gallery_modality)
    queries = embed_files(stub, args.model, args.query, query_modality, args.send, args.batch_size, version)
    indices, scores = rank_gallery(queries, gallery, args.top_k)
    for q, query in enumerate(args.query):
        print(f"{query} ({query_modality}) vs {len(paths)} {args.gallery_modality} images, model version {version}")
        for rank, (i, score) in enumerate(zip(indices[q], scores[q]), start=1):
            print(f"  {rank:3d}  {score:+.4f}  {paths[i]}")
    if args.out:
        render_ranked_lists(args.query, paths, indices, scores, args.out)
        print(f"ranked lists -> {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.serving.client", description="Embed images or search a gallery with the served encoder."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("--server", default="localhost:8500", help="host:port of the gRPC API")
        sub.add_argument("--model", default="lba", help="model name")
        sub.add_argument(
            "--send",
            choices=("bytes", "pixels"),
            default="bytes",
            help="send encoded files (decoded by the server) or pixels decoded here",
        )
        sub.add_argument("--batch-size", type=int, default=16)
        sub.add_argument("--max-message-mb", type=int, default=64)

    embed = commands.add_parser("embed", help="embeddings of images -> .npy")
    common(embed)
    embed.add_argument("--modality", choices=sorted(MODALITY_INDEX), default="visible")
    embed.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    embed.add_argument("--out", required=True, help=".npy file of float32 [N, D]")
    embed.add_argument("images", nargs="+")
    embed.set_defaults(run=_embed_command)

    search = commands.add_parser("search", help="rank a gallery of one modality for queries of the other")
    common(search)
    search.add_argument("--gallery", required=True, help="folder of gallery images (searched recursively)")
    search.add_argument("--gallery-modality", choices=sorted(MODALITY_INDEX), default="infrared")
    search.add_argument("--cache-dir", default=None, help="where gallery embeddings are cached (default: --gallery)")
    search.add_argument("--query", nargs="+", required=True, help="query images (the other modality)")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--out", default=None, help="PNG of the ranked lists")
    search.set_defaults(run=_search_command)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
