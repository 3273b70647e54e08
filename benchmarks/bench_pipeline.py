"""Throughput of the training input pipeline (images/s) on this machine.

Builds an in-memory cache of random uint8 images (decoding is a one-off cost and not measured),
then times the training pipeline with the recipe's flip only and with every augmentation on.

    python benchmarks/bench_pipeline.py --height 288 --width 144 --steps 30
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from common import record, summarize  # noqa: E402

from lba_tf.config import AugmentConfig  # noqa: E402
from lba_tf.data.pipeline import training_dataset  # noqa: E402
from lba_tf.data.records import ImageRecord  # noqa: E402
from lba_tf.data.sampler import IdentitySampler  # noqa: E402

SETTINGS = {
    "flip": AugmentConfig(flip_prob=0.5, pad_crop=0, random_erasing=0.0, channel_augmentation=0.0),
    "all": AugmentConfig(flip_prob=0.5, pad_crop=10, random_erasing=0.5, channel_augmentation=0.5),
}


def synthetic_cache(identities: int, per_modality: int, height: int, width: int):
    """Records of ``identities`` x ``per_modality`` images per modality and random pixels for them."""
    records = [
        ImageRecord(f"{m}/{pid}_{i}.png", pid, 1 if m == "visible" else 3, m, pid)
        for m in ("visible", "infrared")
        for pid in range(identities)
        for i in range(per_modality)
    ]
    images = np.random.default_rng(0).integers(0, 256, (len(records), height, width, 3), np.uint8)
    return records, images


def images_per_second(images, sampler, augment, steps: int, warmup: int) -> float:
    """Time ``steps`` batches after ``warmup`` ones; images (both halves) per second."""
    iterator = iter(training_dataset(images, sampler, augment, seed=0))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)[0].numpy()
    return steps * sampler.batch_size / (time.perf_counter() - start)


def run(
    height: int = 288,
    width: int = 144,
    identities: int = 32,
    per_modality: int = 10,
    P: int = 8,
    K: int = 4,
    steps: int = 30,
    warmup: int = 5,
    repeats: int = 1,
) -> dict:
    """Images/s of every augmentation setting, each the median of ``repeats`` timings."""
    records, images = synthetic_cache(identities, per_modality, height, width)
    sampler = IdentitySampler(records, P, K, seed=0, steps_per_epoch=steps + warmup)
    rows = [
        {
            "augment": name,
            "size": f"{height}x{width}",
            "batch": sampler.batch_size,
            "images_per_s": summarize(
                [images_per_second(images, sampler, augment, steps, warmup) for _ in range(repeats)]
            ),
        }
        for name, augment in SETTINGS.items()
    ]
    settings = {"height": height, "width": width, "P": P, "K": K, "steps": steps, "warmup": warmup, "repeats": repeats}
    return record("pipeline", settings, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=144)
    parser.add_argument("--identities", type=int, default=32, help="identities in the cache")
    parser.add_argument("--per-modality", type=int, default=10, help="images per identity and modality")
    parser.add_argument("-P", type=int, default=8, help="identities per batch")
    parser.add_argument("-K", type=int, default=4, help="images per identity and modality in a batch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="timings per setting (median)")
    args = parser.parse_args()
    result = run(
        args.height,
        args.width,
        args.identities,
        args.per_modality,
        args.P,
        args.K,
        args.steps,
        args.warmup,
        args.repeats,
    )
    for row in result["rows"]:
        print(
            f"{row['size']} batch {row['batch']} augment={row['augment']}: {row['images_per_s']['median']:.0f} images/s"
        )


if __name__ == "__main__":
    main()
