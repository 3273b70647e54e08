"""The tf.data input pipeline: an in-memory uint8 image cache, training batches and inference batches.

Images are decoded and resized once (``load_images``) and kept as uint8 ``[M, H, W, 3]``. The
training pipeline gathers each step's rows from the cache as the :class:`IdentitySampler`
dictates, augments every image with a seed derived from (seed, stream, epoch, step, position) and
normalises, so any step can be reproduced exactly after a restart.

Examples:

>>> cache = load_images(dataset.root, dataset.train, 288, 144, skip_corrupt=True)
>>> sampler = IdentitySampler(cache.records, num_identities=8, num_instances=4, seed=0)
>>> for images, labels in training_dataset(cache.images, sampler, cfg.data.augment, seed=0):
...     pass  # images [64, 288, 144, 3] float32, [visible; infrared]; labels [64] int32
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from lba_tf.config import AugmentConfig
from lba_tf.data.augment import augment_image
from lba_tf.data.errors import DataError, MissingImagesError
from lba_tf.data.preprocess import PIXELS_VERSION, decode_image, normalize, resize_to_uint8
from lba_tf.data.records import ImageRecord
from lba_tf.data.sampler import IdentitySampler
from lba_tf.log import logger

_DECODE_CHUNK = 256
_PROGRESS_MIN_IMAGES = 2000
_AUGMENT_SEED_TAG = 0xA06  # keeps augmentation seeds apart from the sampler's stream


@dataclasses.dataclass(frozen=True)
class ImageCache:
    """Decoded, resized images and the records they belong to.

    Attributes:
        images: uint8 ``[M, H, W, 3]``; row ``j`` is ``records[j]``.
        records: the ``M`` records that decoded, in input order.
        rows: int64 ``[len(input records)]``, the cache row of each input record, -1 if skipped.
    """

    images: np.ndarray
    records: tuple[ImageRecord, ...]
    rows: np.ndarray

    @property
    def num_skipped(self) -> int:
        """How many input records could not be decoded and were left out."""
        return int(np.count_nonzero(self.rows < 0))


def load_images(
    root: str,
    records: Sequence[ImageRecord],
    height: int,
    width: int,
    skip_corrupt: bool = False,
    cache_dir: str | None = None,
) -> ImageCache:
    """Decode (JPEG/PNG/BMP, gray -> 3 channels), resize once with Lanczos and keep as uint8.

    Decoding runs in a parallel tf.data map. With ``cache_dir`` the result is also stored as
    ``.npy`` files named by a hash of (root, record paths, height, width) and read back next time.

    Args:
        root: the dataset folder; record paths are relative to it.
        records: the images to load.
        height: output height in pixels.
        width: output width in pixels.
        skip_corrupt: leave undecodable images out (logged as a warning) instead of failing.
        cache_dir: optional folder for the on-disk copy.

    Returns:
        An :class:`ImageCache`.

    Raises:
        MissingImagesError: an image file does not exist (whatever ``skip_corrupt`` says); a
            ``FileNotFoundError`` too.
        DataError: an image cannot be decoded and ``skip_corrupt`` is false, or none can; the
            message names the first such file and the ``data.skip_corrupt`` setting.
    """
    records = tuple(records)
    paths = [os.path.join(root, r.path) for r in records]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise MissingImagesError(f"{missing[0]}: image file not found{_and_more(missing)}")
    cache_file = _cache_path(cache_dir, root, records, height, width) if cache_dir else None
    if cache_file and os.path.isfile(cache_file + ".npy"):
        images, rows = np.load(cache_file + ".npy"), np.load(cache_file + ".rows.npy")
        logger.info("read %d cached images from %s.npy", len(images), cache_file)
    else:
        images, rows = _decode_all(paths, height, width)
        if cache_file:
            _save_atomic(cache_file + ".npy", images)
            _save_atomic(cache_file + ".rows.npy", rows)
    bad = [paths[i] for i in np.flatnonzero(rows < 0)]
    if len(bad) == len(paths) and paths:
        raise DataError(f"{bad[0]}: cannot decode the image, nor any of the other {len(paths) - 1}")
    if bad and not skip_corrupt:
        raise DataError(
            f"{bad[0]}: cannot decode the image{_and_more(bad)}; replace or remove it, "
            "or set data.skip_corrupt=true to train and evaluate without undecodable images"
        )
    if bad:
        logger.warning("skipped %d undecodable image(s) of %d, e.g. %s", len(bad), len(paths), bad[:3])
    kept = tuple(records[i] for i in np.flatnonzero(rows >= 0))
    return ImageCache(images=images, records=kept, rows=rows)


def _and_more(paths: list[str]) -> str:
    """`` (and 2 more: a, b)`` after the first of ``paths``, or nothing."""
    if len(paths) < 2:
        return ""
    shown = ", ".join(paths[1:4]) + (", ..." if len(paths) > 4 else "")
    return f" (and {len(paths) - 1} more: {shown})"


def _decode_all(paths: list[str], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every path in parallel; failures get row -1. Returns (images, rows)."""

    def load(index, path):
        return index, resize_to_uint8(decode_image(tf.io.read_file(path)), height, width)

    n = len(paths)
    dataset = (
        tf.data.Dataset.from_tensor_slices((tf.range(n, dtype=tf.int64), tf.constant(paths, tf.string)))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .batch(_DECODE_CHUNK)
        .prefetch(1)
    )
    images = np.empty((n, height, width, 3), np.uint8)
    rows = np.full(n, -1, np.int64)
    count, reported = 0, 0
    for index, batch in dataset.as_numpy_iterator():
        images[count : count + len(batch)] = batch
        rows[index] = np.arange(count, count + len(batch))
        count += len(batch)
        done = int(index[-1]) + 1
        if n >= _PROGRESS_MIN_IMAGES and done * 10 // n > reported:
            reported = done * 10 // n
            logger.info("decoded %d / %d images", done, n)
    return images[:count], rows


def _cache_path(cache_dir: str, root: str, records: Sequence[ImageRecord], height: int, width: int) -> str:
    key = json.dumps([PIXELS_VERSION, os.path.abspath(root), height, width, [r.path for r in records]])
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, f"images-{height}x{width}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def _save_atomic(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def training_dataset(
    images: np.ndarray,
    sampler: IdentitySampler,
    augment: AugmentConfig,
    seed: int,
    epoch_start: int = 0,
    step_start: int = 0,
    epochs: int | None = None,
    streams: Sequence[int] = (0,),
    erasing_fill: str = "mean",
) -> tf.data.Dataset:
    """Training batches ``(images [2PK, H, W, 3] float32, labels [2PK] int32)``, one per step.

    Each batch is ``[visible half; infrared half]``, identity-major in both halves, exactly as
    ``sampler.batch_indices(epoch, step, stream)`` orders it. Image ``i`` of a batch is
    augmented with a seed that is a pure function of ``(seed, stream, epoch, step, i)``, so the
    dataset started at ``(epoch_start, step_start)`` yields the same batches as one started at 0
    and advanced to that step.

    Args:
        images: uint8 ``[M, H, W, 3]``, row ``j`` the image of ``sampler.records[j]``.
        sampler: draws the rows of every step.
        augment: the augmentation settings.
        seed: the augmentation seed, ``>= 0``.
        epoch_start: the first epoch.
        step_start: the first step inside ``epoch_start``.
        epochs: stop before this epoch; ``None`` repeats forever.
        streams: sampler streams; for each step one batch per stream, in this order (the
            per-replica batches of a multi-replica step, see :func:`distributed_dataset_fn`).
        erasing_fill: ``"mean"`` or ``"random"``, the random-erasing fill.

    Returns:
        A ``tf.data.Dataset``.
    """
    if len(images) != len(sampler.records):
        raise ValueError(f"{len(images)} cached images but the sampler has {len(sampler.records)} records")
    if not 0 <= step_start < sampler.steps_per_epoch or epoch_start < 0 or seed < 0:
        raise ValueError(
            f"need seed >= 0, epoch_start >= 0 and 0 <= step_start < {sampler.steps_per_epoch}; "
            f"got seed={seed}, epoch_start={epoch_start}, step_start={step_start}"
        )
    streams = tuple(streams)
    steps = sampler.steps_per_epoch
    first = (epoch_start * steps + step_start) * len(streams)
    positions = (
        tf.data.Dataset.counter(first)
        if epochs is None
        else tf.data.Dataset.range(first, epochs * steps * len(streams))
    )
    n, half = sampler.batch_size, sampler.images_per_modality
    height, width = images.shape[1:3]
    visible = tf.range(n) < half

    def step_rows(position: np.int64):
        step_index, lane = divmod(int(position), len(streams))
        epoch, step = divmod(step_index, steps)
        rgb, ir = sampler.batch_indices(epoch, step, streams[lane])
        rows = np.concatenate([rgb, ir])
        state = np.random.SeedSequence([seed, streams[lane], epoch, step, _AUGMENT_SEED_TAG])
        image_seeds = state.generate_state(2 * n, np.uint32).astype(np.int64).reshape(n, 2)
        return images[rows], sampler.labels[rows], image_seeds

    def gather(position):
        batch, labels, seeds = tf.numpy_function(step_rows, [position], [tf.uint8, tf.int32, tf.int64], stateful=False)
        batch.set_shape([n, height, width, 3])
        labels.set_shape([n])
        seeds.set_shape([n, 2])
        return tf.data.Dataset.from_tensor_slices((batch, labels, seeds, visible))

    def transform(image, label, image_seed, is_visible):
        return augment_image(image, image_seed, is_visible, augment, erasing_fill), label

    return (
        positions.flat_map(gather)
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(n, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def distributed_dataset_fn(
    images: np.ndarray,
    sampler: IdentitySampler,
    augment: AugmentConfig,
    seed: int,
    epoch_start: int = 0,
    step_start: int = 0,
    epochs: int | None = None,
    erasing_fill: str = "mean",
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``.

    Every replica gets whole ``2PK`` batches of its own: global replica ``r`` draws from sampler
    stream ``r``, so the cross-modal pairs of the alignment stay inside one replica's batch. An
    input pipeline serving ``R`` replicas yields, for each step, the batches of its replicas in
    order, which is how the strategy hands them out.

    Args:
        images, sampler, augment, seed, epoch_start, step_start, epochs, erasing_fill:
            as for :func:`training_dataset`.

    Returns:
        ``dataset_fn(input_context) -> tf.data.Dataset``.
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_pipeline, remainder = divmod(context.num_replicas_in_sync, context.num_input_pipelines)
        if remainder or per_pipeline < 1:
            raise ValueError(
                f"{context.num_replicas_in_sync} replicas do not divide evenly among "
                f"{context.num_input_pipelines} input pipelines"
            )
        first = context.input_pipeline_id * per_pipeline
        return training_dataset(
            images,
            sampler,
            augment,
            seed,
            epoch_start,
            step_start,
            epochs,
            streams=range(first, first + per_pipeline),
            erasing_fill=erasing_fill,
        )

    return dataset_fn


def inference_dataset(images: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Normalised float32 batches ``[B, H, W, 3]`` of the cache in row order (the last may be short).

    The dataset (and any iterator over it) holds ``images``; its python function reaches them
    through a weak reference only, because TensorFlow keeps every python function it was given for
    the life of the process, and with it whatever the function holds: one test-set cache per
    evaluation.

    Args:
        images: uint8 ``[M, H, W, 3]``.
        batch_size: images per batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    height, width = images.shape[1:3]
    weak_images = weakref.ref(images)

    def rows(start: np.int64) -> np.ndarray:
        return weak_images()[int(start) : int(start) + batch_size]

    def load(start):
        batch = tf.numpy_function(rows, [start], tf.uint8, stateful=False)
        batch.set_shape([None, height, width, 3])
        return normalize(batch)

    dataset = (
        tf.data.Dataset.range(0, len(images), batch_size)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    dataset._source_images = images  # an iterator keeps its dataset, so the images live while it does
    return dataset
