"""The client: embeddings over gRPC, batching, gallery cache, ranking, the command line."""

import os

import numpy as np
import pytest
from PIL import Image

from lba_tf.evaluation.ranked_lists import RIGHT, UNKNOWN, WRONG
from lba_tf.export.saved_model import reference_embeddings
from lba_tf.serving import client
from tests.serving.standin import IMAGE_SIZE


def _write_images(directory, count, seed, size=(40, 20), grey=False):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(count):
        shape = size if grey else (*size, 3)
        path = os.path.join(directory, f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(path)
        paths.append(path)
    return paths


def _reference(model, paths, modality):
    data = [open(p, "rb").read() for p in paths]
    return reference_embeddings(model, f"embed_{modality}_bytes", {"image_bytes": data}, IMAGE_SIZE)


@pytest.fixture
def grpc_stub(server):
    return client.connect(f"127.0.0.1:{server.port}")


def test_chunks_group_equal_shapes_up_to_the_batch_size():
    shapes = [(2, 2)] * 5 + [(3, 2)] * 2 + [(2, 2)]
    chunks = client._chunks(shapes, batch_size=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 5), (5, 7), (7, 8)]


def test_rank_gallery_orders_by_dot_product():
    gallery = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    queries = np.array([[0.8, 0.6], [0.0, -1.0]])
    indices, scores = client.rank_gallery(queries, gallery, top_k=3)
    # query 0: 0.8, 0.96, 0.6, -0.8 -> 1, 0, 2; query 1: 0, -0.8, -1, 0 -> 0 and 3 tie (gallery order), then 1
    assert indices.tolist() == [[1, 0, 2], [0, 3, 1]]
    np.testing.assert_allclose(scores, [[0.96, 0.8, 0.6], [0.0, 0.0, -0.8]])
    assert client.rank_gallery(queries, gallery, top_k=10)[0].shape == (2, 4)


def test_embed_images_sends_bytes_and_pixels_in_batches(grpc_stub, standin_model, tmp_path):
    paths = _write_images(tmp_path, 5, seed=1) + _write_images(tmp_path / "grey", 2, seed=2, size=(30, 18), grey=True)
    want = _reference(standin_model, paths, "infrared")
    by_bytes = client.embed_files(grpc_stub, "lba", paths, "infrared", send="bytes", batch_size=2)
    by_pixels = client.embed_files(grpc_stub, "lba", paths, "infrared", send="pixels", batch_size=4)
    np.testing.assert_allclose(by_bytes, want, atol=1e-5)
    np.testing.assert_allclose(by_pixels, want, atol=1e-5)  # PNG: Pillow and TF decode the same pixels


def test_per_image_modalities_use_serving_default(grpc_stub, standin_model):
    pixels = np.random.default_rng(3).integers(0, 256, (3, 32, 16, 3), np.uint8)
    got = client.embed_images(grpc_stub, "lba", images=pixels, modality=["infrared", "visible", 1])
    want = reference_embeddings(
        standin_model, "serving_default", {"images": pixels, "modality": np.array([1, 0, 1], np.int32)}, IMAGE_SIZE
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="modality"):
        client.embed_images(grpc_stub, "lba", images=pixels, modality="thermal")


def test_gallery_embeddings_are_cached_by_version_and_files(grpc_stub, standin_model, tmp_path, monkeypatch):
    gallery = tmp_path / "gallery"
    paths = _write_images(gallery, 4, seed=4)
    names, first, version = client.gallery_embeddings(grpc_stub, "lba", str(gallery), "infrared")
    assert names == paths and version == 1
    np.testing.assert_allclose(first, _reference(standin_model, paths, "infrared"), atol=1e-5)
    cache_files = [f for f in os.listdir(gallery) if f.endswith(".npz")]
    assert len(cache_files) == 1

    calls = []
    monkeypatch.setattr(client, "embed_files", lambda *args, **kwargs: calls.append(args) or first)
    _, again, _ = client.gallery_embeddings(grpc_stub, "lba", str(gallery), "infrared")
    assert calls == [] and np.array_equal(again, first)  # served from the cache

    Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(paths[0])  # an edited file is a new key
    os.utime(paths[0], ns=(1, 1))
    client.gallery_embeddings(grpc_stub, "lba", str(gallery), "infrared")
    assert len(calls) == 1


def test_search_command_prints_ranked_lists_and_draws_them(server, standin_model, tmp_path, capsys):
    gallery = _write_images(tmp_path / "ir", 6, seed=5)
    queries = _write_images(tmp_path / "rgb", 2, seed=6)
    out = tmp_path / "ranked.png"
    client.main(
        [
            "search",
            "--server",
            f"127.0.0.1:{server.port}",
            "--gallery",
            str(tmp_path / "ir"),
            "--gallery-modality",
            "infrared",
            "--query",
            *queries,
            "--top-k",
            "3",
            "--out",
            str(out),
        ]
    )
    indices, scores = client.rank_gallery(
        _reference(standin_model, queries, "visible"), _reference(standin_model, gallery, "infrared"), 3
    )
    lines = capsys.readouterr().out.splitlines()
    printed = [line.split() for line in lines if line.startswith("  ")]
    assert [p[2] for p in printed] == [gallery[i] for i in indices.ravel()]
    np.testing.assert_allclose([float(p[1]) for p in printed], scores.ravel(), atol=1e-4)
    assert all(len(p) == 3 for p in printed)  # identities unknown: no right or wrong
    with Image.open(out) as image:
        # 2 rows of the query and 3 gallery images, each drawn at 256 x 128 in its frame
        assert image.mode == "RGB" and image.height > 2 * 256 and image.width > 4 * 128


def test_embed_command_writes_npy(server, standin_model, tmp_path, capsys):
    paths = _write_images(tmp_path, 3, seed=7)
    out = tmp_path / "emb.npy"
    client.main(["embed", "--server", f"127.0.0.1:{server.port}", "--modality", "visible", *paths, "--out", str(out)])
    np.testing.assert_allclose(np.load(out), _reference(standin_model, paths, "visible"), atol=1e-5)
    assert "3 embeddings of size 8" in capsys.readouterr().out


def test_command_reports_server_errors(server, tmp_path, capsys):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(SystemExit) as info:
        client.main(["embed", "--server", f"127.0.0.1:{server.port}", str(path), "--out", str(tmp_path / "e.npy")])
    assert info.value.code == 1 and "INVALID_ARGUMENT" in capsys.readouterr().err


def test_identities_come_from_the_sysu_layout_when_every_path_has_it():
    queries = ["data/SYSU-MM01/cam3/0012/0004.jpg"]
    gallery = ["g/cam1/0012/0001.jpg", "cam4/0007/0002.jpg", "/abs/cam5/0103/0001.jpg"]
    assert client.search_identities(queries, gallery) == ([12], [12, 7, 103])
    # one file outside the layout: nothing is inferred, for the queries either
    assert client.search_identities(queries, [*gallery, "g/extra/0001.jpg"]) == (None, None)
    assert client.search_identities(queries, ["g/cam1/x12/0001.jpg"]) == (None, None)
    assert client.layout_identities(["mycam3/0012/0004.jpg"]) is None


def test_identity_lists_name_files_relative_to_their_folder(tmp_path, monkeypatch):
    (tmp_path / "gallery").mkdir()
    listing = tmp_path / "gallery" / "ids.txt"
    listing.write_text(
        f"# path identity\na/0001.jpg 0012\n\nb c/0002.jpg   7  # a space in the path\n{tmp_path}/q.jpg bob\n"
    )
    monkeypatch.chdir(tmp_path)
    gallery = ["gallery/a/0001.jpg", str(tmp_path / "gallery" / "b c" / "0002.jpg"), "gallery/other.jpg"]
    query_ids, gallery_ids = client.search_identities(["q.jpg"], gallery, str(listing), str(listing))
    assert query_ids == ["bob"] and gallery_ids == [12, 7, None]  # a file the list does not name: unknown
    with pytest.raises(ValueError, match=r"ids.txt names none of the 1 files, e.g. elsewhere.jpg"):
        client.search_identities(["elsewhere.jpg"], gallery, str(listing))
    listing.write_text("a/0001.jpg 12\nlonely\n")
    with pytest.raises(ValueError, match=r"ids.txt:2: expected 'PATH IDENTITY', got 'lonely'"):
        client.search_identities(["q.jpg"], gallery, None, str(listing))


def _unit(degrees_or_cosines):
    angles = np.arccos(np.asarray(degrees_or_cosines, np.float64))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def _flat_image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 32, 3), colour, np.uint8)).save(path)
    return str(path)


def _frame_colour(picture, colour):
    ys, xs = np.nonzero(np.all(picture == colour, axis=-1))
    return tuple(picture[(ys.min() + ys.max()) // 2, xs.min() - 2])


def test_search_prints_the_digits_that_tell_similarities_apart_and_marks_identities(tmp_path, monkeypatch, capsys):
    # one person's gallery images at cosine 0.99987 and 0.99985 from the query (four decimals would
    # print 0.9999 and 0.9998), another person's at 0.5; no server: the embeddings are given. PNG
    # files in the SYSU-MM01 layout, so that the drawn colours are exact
    query = _flat_image(tmp_path / "rgb" / "cam1" / "0012" / "0004.png", (200, 0, 200))
    gallery = [
        _flat_image(tmp_path / "ir" / "cam3" / "0007" / "0001.png", (0, 60, 250)),
        _flat_image(tmp_path / "ir" / "cam3" / "0012" / "0001.png", (0, 50, 250)),
        _flat_image(tmp_path / "ir" / "cam6" / "0012" / "0002.png", (0, 51, 250)),
    ]
    monkeypatch.setattr(client, "connect", lambda *args: None)
    monkeypatch.setattr(client, "gallery_embeddings", lambda *args: (gallery, _unit([0.5, 0.99987, 0.99985]), 3))
    monkeypatch.setattr(client, "embed_files", lambda *args: _unit([1.0]))
    out = tmp_path / "ranked.png"
    client.main(["search", "--gallery", str(tmp_path / "ir"), "--query", query, "--top-k", "3", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{query} (visible, id 12) vs 3 infrared images, model version 3; first right match: rank 1"
    assert lines[1:4] == [
        f"    1  +0.99987  {gallery[1]}  id 12 right",
        f"    2  +0.99985  {gallery[2]}  id 12 right",
        f"    3  +0.50000  {gallery[0]}  id 7 wrong",
    ]
    with Image.open(out) as image:
        picture = np.asarray(image)
    assert _frame_colour(picture, (0, 50, 250)) == RIGHT and _frame_colour(picture, (0, 60, 250)) == WRONG


def test_search_without_identities_prints_no_marks_and_frames_grey(tmp_path, monkeypatch, capsys):
    query = _flat_image(tmp_path / "q.png", (200, 0, 200))
    gallery = [_flat_image(tmp_path / "ir" / "a.png", (0, 50, 250))]
    monkeypatch.setattr(client, "connect", lambda *args: None)
    monkeypatch.setattr(client, "gallery_embeddings", lambda *args: (gallery, _unit([0.25]), 1))
    monkeypatch.setattr(client, "embed_files", lambda *args: _unit([1.0]))
    out = tmp_path / "ranked.png"
    client.main(["search", "--gallery", str(tmp_path / "ir"), "--query", query, "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"{query} (visible) vs 1 infrared images, model version 1", f"    1  +0.2500  {gallery[0]}"]
    with Image.open(out) as image:
        assert _frame_colour(np.asarray(image), (0, 50, 250)) == UNKNOWN


def test_a_bad_identity_list_is_one_error_line(tmp_path, monkeypatch, capsys):
    query = _flat_image(tmp_path / "q.png", (200, 0, 200))
    monkeypatch.setattr(client, "connect", lambda *args: None)
    monkeypatch.setattr(client, "gallery_embeddings", lambda *args: ([query], _unit([0.25]), 1))
    monkeypatch.setattr(client, "embed_files", lambda *args: _unit([1.0]))
    (tmp_path / "ids.txt").write_text("nothing.jpg 3\n")
    with pytest.raises(SystemExit) as info:
        client.main(["search", "--gallery", str(tmp_path), "--query", query, "--gallery-ids", f"{tmp_path}/ids.txt"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path}/ids.txt names none of the 1 files, e.g. {query} (its paths are relative to its own folder)"
    )
