"""Input pipeline: image cache from files, training batches, resume, per-replica streams, inference."""

import gc
import logging
import os
import re
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lba_tf.config import AugmentConfig
from lba_tf.data.errors import DataError
from lba_tf.data.pipeline import distributed_dataset_fn, inference_dataset, load_images, training_dataset
from lba_tf.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize
from lba_tf.data.records import ImageRecord
from lba_tf.data.sampler import IdentitySampler
from lba_tf.log import logger

H, W = 16, 8
P, K = 2, 2
OFF = AugmentConfig(flip_prob=0.0, pad_crop=0, random_erasing=0.0, channel_augmentation=0.0)
ALL = AugmentConfig(flip_prob=0.5, pad_crop=2, random_erasing=0.5, channel_augmentation=0.5)
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP"}


def _write_dataset(root, num_ids=4, per_modality=3):
    """Visible images in PNG/JPEG/BMP (mixed sizes), grayscale infrared PNGs; returns the records."""
    rng = np.random.default_rng(0)
    records = []
    for label in range(num_ids):
        for i in range(per_modality):
            ext = list(FORMATS)[(label + i) % 3]
            path = f"rgb/{label}_{i}.{ext}"
            pixels = rng.integers(0, 256, (24 + 4 * i, 12 + 2 * label, 3), np.uint8)
            _save(root, path, Image.fromarray(pixels), FORMATS[ext])
            records.append(ImageRecord(path, 10 + label, 1, "visible", label))
            path = f"ir/{label}_{i}.png"
            _save(root, path, Image.fromarray(rng.integers(0, 256, (32, 16), np.uint8), mode="L"), "PNG")
            records.append(ImageRecord(path, 10 + label, 3, "infrared", label))
    return records


def _save(root, path, image, fmt):
    os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
    image.save(os.path.join(root, path), format=fmt)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    records = _write_dataset(root)
    cache = load_images(root, records, H, W)
    sampler = IdentitySampler(cache.records, P, K, seed=5)
    return root, records, cache, sampler


def _expected_pixels(root, record):
    """The authors' pipeline: PIL opens the file and resizes it with Lanczos (``ANTIALIAS``)."""
    with Image.open(os.path.join(root, record.path)) as image:
        return np.asarray(image.convert("RGB").resize((W, H), Image.LANCZOS))


def _take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_load_images_decodes_resizes_and_keeps_record_order(dataset):
    root, records, cache, _ = dataset
    assert cache.images.shape == (len(records), H, W, 3) and cache.images.dtype == np.uint8
    assert cache.records == tuple(records) and cache.num_skipped == 0
    np.testing.assert_array_equal(cache.rows, np.arange(len(records)))
    for j, record in enumerate(records):  # PNG, JPEG and BMP visible, grey PNG infrared
        np.testing.assert_array_equal(cache.images[j], _expected_pixels(root, record))


def test_grayscale_images_become_three_equal_channels(dataset):
    _, records, cache, _ = dataset
    ir = [j for j, r in enumerate(records) if r.modality == "infrared"]
    gray = cache.images[ir]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert gray.std() > 10  # real content, not a constant


def test_corrupt_image_is_an_error_naming_it_or_skipped_and_reported(tmp_path, caplog):
    root = str(tmp_path)
    records = _write_dataset(root, num_ids=3, per_modality=1)
    (tmp_path / "rgb" / "broken.jpg").write_bytes(b"this is not an image")
    broken = ImageRecord("rgb/broken.jpg", 10, 1, "visible", 0)
    records.insert(2, broken)
    with pytest.raises(DataError) as error:
        load_images(root, records, H, W)
    assert str(error.value) == (
        f"{root}/rgb/broken.jpg: cannot decode the image; replace or remove it, "
        "or set data.skip_corrupt=true to train and evaluate without undecodable images"
    )
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="lba_tf"):
            cache = load_images(root, records, H, W, skip_corrupt=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert "skipped 1 undecodable image(s) of 7" in caplog.text
    assert cache.num_skipped == 1 and broken not in cache.records
    assert cache.records == tuple(r for r in records if r is not broken)
    np.testing.assert_array_equal(cache.rows, [0, 1, -1, 2, 3, 4, 5])
    np.testing.assert_array_equal(cache.images[2], _expected_pixels(root, records[3]))


def test_several_corrupt_images_name_the_first_and_count_the_others(tmp_path):
    root = str(tmp_path)
    records = _write_dataset(root, num_ids=2, per_modality=1)
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / f"{name}.jpg").write_bytes(b"not an image")
    broken = [ImageRecord(f"{name}.jpg", 1, 1, "visible", 0) for name in ("a", "b", "c", "d", "e")]
    with pytest.raises(
        DataError, match=re.escape(f"{root}/a.jpg: cannot decode the image (and 4 more: {root}/b.jpg, ")
    ):
        load_images(root, records + broken, H, W)
    with pytest.raises(DataError, match=re.escape(f"{root}/a.jpg: cannot decode the image, nor any of the other 4")):
        load_images(root, broken, H, W, skip_corrupt=True)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/nowhere.png: image file not found")) as error:
        load_images(str(tmp_path), [ImageRecord("nowhere.png", 1, 1, "visible", 0)], H, W)
    assert isinstance(error.value, DataError)


def test_disk_cache_is_written_and_read_back(tmp_path):
    root = str(tmp_path / "data")
    records = _write_dataset(root, num_ids=2, per_modality=1)
    first = load_images(root, records, H, W, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    # overwrite an image: a second load must come from the cache, not the file
    _save(root, records[0].path, Image.new("RGB", (8, 16), (1, 2, 3)), FORMATS[records[0].path[-3:]])
    second = load_images(root, records, H, W, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.rows, first.rows)


def test_training_batches_follow_the_sampler_and_are_normalised(dataset):
    _, _, cache, sampler = dataset
    ds = training_dataset(cache.images, sampler, OFF, seed=0, epochs=2)
    assert ds.element_spec[0].shape == (2 * P * K, H, W, 3) and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape == (2 * P * K,) and ds.element_spec[1].dtype == tf.int32
    batches = _take(ds, 100)
    assert len(batches) == 2 * sampler.steps_per_epoch == 2 * 4  # int(12 / 4) + 1 = 4 per epoch
    for position, (images, labels) in enumerate(batches):
        rgb, ir = sampler.batch_indices(*divmod(position, sampler.steps_per_epoch))
        rows = np.concatenate([rgb, ir])
        np.testing.assert_array_equal(images, normalize(cache.images[rows]).numpy())
        np.testing.assert_array_equal(labels, sampler.labels[rows])
        np.testing.assert_array_equal(labels[: P * K], labels[P * K :])  # identity-major halves
        assert all(cache.records[i].modality == "visible" for i in rgb)


def test_flip_with_p1_mirrors_every_image_of_the_batch(dataset):
    _, _, cache, sampler = dataset
    flip = AugmentConfig(flip_prob=1.0, pad_crop=0, random_erasing=0.0, channel_augmentation=0.0)
    ((images, _),) = _take(training_dataset(cache.images, sampler, flip, seed=0), 1)
    rows = np.concatenate(sampler.batch_indices(0, 0))
    np.testing.assert_array_equal(images, normalize(cache.images[rows][:, :, ::-1]).numpy())


def test_same_seed_gives_identical_batches_and_another_seed_different_ones(dataset):
    _, _, cache, sampler = dataset
    a = _take(training_dataset(cache.images, sampler, ALL, seed=3), 4)
    b = _take(training_dataset(cache.images, sampler, ALL, seed=3), 4)
    c = _take(training_dataset(cache.images, sampler, ALL, seed=4), 4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    assert all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))  # the sampler's seed rules labels


def test_resume_mid_epoch_gives_the_same_augmented_batches(dataset):
    _, _, cache, sampler = dataset
    steps = sampler.steps_per_epoch
    full = _take(training_dataset(cache.images, sampler, ALL, seed=1), 2 * steps)
    resumed = _take(training_dataset(cache.images, sampler, ALL, seed=1, epoch_start=1, step_start=1), steps - 1)
    for (xa, ya), (xb, yb) in zip(full[steps + 1 :], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def _valid_batch(sampler, labels, epoch, step, stream):
    rgb, ir = sampler.batch_indices(epoch, step, stream)
    np.testing.assert_array_equal(labels, sampler.labels[np.concatenate([rgb, ir])])


def test_each_input_pipeline_gets_whole_batches_of_its_own_stream(dataset):
    _, _, cache, sampler = dataset
    fn = distributed_dataset_fn(cache.images, sampler, OFF, seed=0)
    pipelines = [
        _take(fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)), 3)
        for i in range(2)
    ]
    for stream, batches in enumerate(pipelines):
        for step, (images, labels) in enumerate(batches):
            assert images.shape == (2 * P * K, H, W, 3)
            _valid_batch(sampler, labels, 0, step, stream)
    assert not np.array_equal(pipelines[0][0][0], pipelines[1][0][0])


def test_one_pipeline_feeding_two_replicas_alternates_their_streams(dataset):
    _, _, cache, sampler = dataset
    fn = distributed_dataset_fn(cache.images, sampler, OFF, seed=0, epoch_start=2)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    for position, (_, labels) in enumerate(_take(fn(context), 4)):
        step, replica = divmod(position, 2)
        _valid_batch(sampler, labels, 2, step, replica)
    with pytest.raises(ValueError, match="divide evenly"):
        fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=3))


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices_gives_each_replica_its_stream(dataset):
    root = dataset[0]
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from lba_tf.config import AugmentConfig
        from lba_tf.data.pipeline import distributed_dataset_fn, load_images
        from lba_tf.data.sampler import IdentitySampler
        from lba_tf.data.records import ImageRecord
        records = {dataset[1]!r}
        cache = load_images({root!r}, records, {H}, {W})
        sampler = IdentitySampler(cache.records, {P}, {K}, seed=5)
        off = AugmentConfig(flip_prob=0.0, pad_crop=0, random_erasing=0.0, channel_augmentation=0.0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = strategy.distribute_datasets_from_function(distributed_dataset_fn(cache.images, sampler, off, 0))
        images, labels = next(iter(dist))
        for replica, got in enumerate(strategy.experimental_local_results(labels)):
            rgb, ir = sampler.batch_indices(0, 0, replica)
            np.testing.assert_array_equal(got.numpy(), sampler.labels[np.concatenate([rgb, ir])])
        assert [x.shape[0] for x in strategy.experimental_local_results(images)] == [{2 * P * K}] * 2
        print("OK")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_inference_batches_cover_the_cache_in_order(dataset):
    _, _, cache, _ = dataset
    batches = [x.numpy() for x in inference_dataset(cache.images, batch_size=5)]
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4]  # 24 images
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), normalize(cache.images).numpy())


@pytest.mark.parametrize("batch_size", [1, 7, 24, 64])
def test_inference_batches_equal_a_numpy_reference(batch_size):
    images = np.random.default_rng(1).integers(0, 256, (24, H, W, 3), np.uint8)
    expected = (images.astype(np.float32) / np.float32(255) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    batches = [x.numpy() for x in inference_dataset(images, batch_size)]
    assert [len(b) for b in batches] == [len(images[i : i + batch_size]) for i in range(0, 24, batch_size)]
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def test_inference_dataset_keeps_the_images_only_while_it_or_an_iterator_lives():
    images = np.random.default_rng(2).integers(0, 256, (10, H, W, 3), np.uint8)
    expected = normalize(images).numpy()
    alive = weakref.ref(images)
    ds = inference_dataset(images, batch_size=4)
    iterator = iter(inference_dataset(images, batch_size=3))
    del images
    gc.collect()
    np.testing.assert_array_equal(np.concatenate(list(ds)), expected)
    np.testing.assert_array_equal(np.concatenate(list(iterator)), expected)
    del ds, iterator
    gc.collect()
    assert alive() is None  # TensorFlow keeps the python functions, not what they read
