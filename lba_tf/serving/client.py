"""Client of the served encoder: embeddings over gRPC, and cross-modality search of a gallery.

Only the standard ``PredictionService`` calls (``Predict``, ``GetModelMetadata``) are used, so
the same commands work against TensorFlow Serving and against ``lba_tf.serving.server``.

    python -m lba_tf.serving.client embed --server localhost:8500 --modality visible a.jpg b.jpg --out emb.npy
    python -m lba_tf.serving.client search --server localhost:8500 --gallery ir_gallery/ \\
        --gallery-modality infrared --query a.jpg --top-k 10 --out ranked.png

``search`` prints each query's top gallery files with their cosine similarities, to as many
decimals as tell neighbours apart (``lba_tf.evaluation.ranked_lists.score_decimals``), and draws
them as the evaluation does (``draw_ranked_lists``). Where identities are known, right and wrong
matches are marked (green and red frames, ``right``/``wrong`` in the text) and each query's first
right match is named. They are known from the file names when every query and gallery path is in
the SYSU-MM01 layout (``.../cam3/0012/0004.jpg``: identity 12, the parent folder), or from
``--query-ids FILE`` / ``--gallery-ids FILE``: one ``PATH IDENTITY`` per line, the identity the
last field (``0012`` and ``12`` are the same), ``PATH`` absolute or relative to the list file's
folder, blank lines and ``#`` comments skipped; files a list does not name are unknown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Hashable, Sequence

import grpc
import numpy as np

from lba_tf.log import import_tensorflow_quietly

import_tensorflow_quietly()  # its CUDA stub prints at load time otherwise
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from lba_tf.data.records import MODALITY_INDEX  # noqa: E402
from lba_tf.evaluation.ranked_lists import (  # noqa: E402
    RankedList,
    RankedLists,
    draw_ranked_lists,
    first_right_rank,
    score_decimals,
    write_png,
)
from lba_tf.export.saved_model import OUTPUT_NAME  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SYSU_LAYOUT = re.compile(r"(?:^|[\\/])cam\d+[\\/](\d+)[\\/][^\\/]+$")
"""``.../cam<n>/<identity>/<file>``; group 1 is the identity."""
THUMBNAIL = (256, 128)
"""``(height, width)`` every image of the search picture is drawn at."""


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


def identity(text: str) -> Hashable:
    """An identity as written: a decimal number (``0012`` -> 12), or the text itself."""
    return int(text) if text.isdecimal() else text


def layout_identities(paths: Sequence[str]) -> list[int] | None:
    """The identity of every path in the SYSU-MM01 layout (``.../cam3/0012/0004.jpg`` -> 12), or
    None unless every path has that form."""
    found = [SYSU_LAYOUT.search(path) for path in paths]
    return [int(match.group(1)) for match in found] if all(found) else None


def read_identity_list(list_file: str) -> dict[str, Hashable]:
    """``{absolute path: identity}`` of a list of ``PATH IDENTITY`` lines (see the module
    docstring); relative paths are taken from the list file's folder.

    Raises:
        ValueError: a line without an identity (the message names file and line).
    """
    base = os.path.dirname(os.path.abspath(list_file))
    listed = {}
    with open(list_file) as f:
        for number, line in enumerate(f, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{number}: expected 'PATH IDENTITY', got {line!r}")
            listed[os.path.normpath(os.path.join(base, parts[0]))] = identity(parts[1])
    return listed


def listed_identities(paths: Sequence[str], list_file: str) -> list[Hashable | None]:
    """The identity of each of ``paths`` in ``list_file`` (None for a file it does not name).

    Raises:
        ValueError: the list names none of ``paths`` (most likely relative to another folder).
    """
    listed = read_identity_list(list_file)
    found = [listed.get(os.path.abspath(path)) for path in paths]
    if paths and all(pid is None for pid in found):
        raise ValueError(
            f"{list_file} names none of the {len(paths)} files, e.g. {paths[0]} "
            "(its paths are relative to its own folder)"
        )
    return found


def search_identities(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    query_ids: str | None = None,
    gallery_ids: str | None = None,
) -> tuple[list | None, list | None]:
    """The identities of the queries and of the gallery, each a list (None where unknown) or None.

    A side takes its list file when given; otherwise its file names' identities when every
    query and gallery path is in the SYSU-MM01 layout (:func:`layout_identities`); else None.
    """
    layout = layout_identities([*query_paths, *gallery_paths])
    sides = []
    for paths, list_file, start in ((query_paths, query_ids, 0), (gallery_paths, gallery_ids, len(query_paths))):
        if list_file:
            sides.append(listed_identities(paths, list_file))
        else:
            sides.append(layout[start : start + len(paths)] if layout else None)
    return sides[0], sides[1]


def search_ranked_lists(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    order: np.ndarray,
    scores: np.ndarray,
    top_k: int,
    query_ids: Sequence | None = None,
    gallery_ids: Sequence | None = None,
    query_modality: str = "",
) -> RankedLists:
    """The search as :class:`lba_tf.evaluation.ranked_lists.RankedLists`, images read from the files.

    Args:
        query_paths: ``Q`` query files.
        gallery_paths: the gallery files ``order`` points into.
        order: ``[Q, G]`` each query's whole ranked gallery (:func:`rank_gallery` with ``top_k=G``).
        scores: ``[Q, >= top_k]`` their similarities.
        top_k: gallery images per query.
        query_ids, gallery_ids: identities (:func:`search_identities`), or None.
        query_modality: a note under each query.
    """
    rows = []
    for q, path in enumerate(query_paths):
        top = order[q, :top_k]
        qid = query_ids[q] if query_ids is not None else None
        ranked_ids = [gallery_ids[i] for i in order[q]] if gallery_ids is not None else None
        rows.append(
            RankedList(
                query=read_pixels(path),
                gallery=[read_pixels(gallery_paths[i]) for i in top],
                scores=[float(s) for s in scores[q, :top_k]],
                query_pid=qid,
                gallery_pids=ranked_ids[:top_k] if ranked_ids is not None else None,
                first_right=first_right_rank(ranked_ids, qid) if ranked_ids is not None else None,
                note=query_modality,
            )
        )
    return RankedLists(rows, "cosine similarity")


def search_lines(
    ranked: RankedLists,
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    order: np.ndarray,
    query_modality: str,
    searched: str,
) -> list[str]:
    """The text of a search: per query a heading line, then one line per ranked gallery file:
    rank, similarity (:func:`score_decimals` decimals, one count for all) and path, and
    ``id <n> right``/``wrong`` where identities are known.

    Args:
        ranked: :func:`search_ranked_lists`.
        query_paths, gallery_paths, order: as given to it.
        query_modality: the queries' modality.
        searched: what was searched, for the heading (``"6 infrared images, model version 1"``).
    """
    decimals = score_decimals([list(row.scores) for row in ranked.rows])
    lines = []
    for q, (path, row) in enumerate(zip(query_paths, ranked.rows)):
        known = "" if row.query_pid is None else f", id {row.query_pid}"
        first = {None: "", 0: "; no right match"}.get(row.first_right, f"; first right match: rank {row.first_right}")
        lines.append(f"{path} ({query_modality}{known}) vs {searched}{first}")
        pids = row.gallery_pids if row.gallery_pids is not None else [None] * len(row.scores)
        for rank, (i, score, pid, verdict) in enumerate(zip(order[q], row.scores, pids, row.verdicts()), start=1):
            mark = "" if pid is None else f"  id {pid}" + {None: "", True: " right", False: " wrong"}[verdict]
            lines.append(f"  {rank:3d}  {score + 0.0:+.{decimals}f}  {gallery_paths[i]}{mark}")
    return lines


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
    query_ids, gallery_ids = search_identities(args.query, paths, args.query_ids, args.gallery_ids)
    order, scores = rank_gallery(queries, gallery, len(paths))
    top_k = min(args.top_k, len(paths))
    ranked = search_ranked_lists(args.query, paths, order, scores, top_k, query_ids, gallery_ids, query_modality)
    searched = f"{len(paths)} {args.gallery_modality} images, model version {version}"
    for line in search_lines(ranked, args.query, paths, order, query_modality, searched):
        print(line)
    if args.out:
        write_png(draw_ranked_lists(ranked, title=f"{args.model}: {searched}", cell=THUMBNAIL), args.out)
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
    ids = (
        "one 'PATH IDENTITY' per line, PATH absolute or relative to FILE's folder; without it, identities "
        "come from the file names when every query and gallery path is .../cam<n>/<identity>/<file> (SYSU-MM01)"
    )
    search.add_argument("--query-ids", default=None, metavar="FILE", help=f"the queries' identities: {ids}")
    search.add_argument("--gallery-ids", default=None, metavar="FILE", help=f"the gallery's identities: {ids}")
    search.set_defaults(run=_search_command)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
