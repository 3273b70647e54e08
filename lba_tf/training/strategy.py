"""Choosing the tf.distribute strategy: one device, all local devices, or several hosts."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from lba_tf.log import logger


def _cluster_workers() -> int:
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    return len(config.get("cluster", {}).get("worker", []))


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy named by ``train.strategy``.

    Args:
        name: ``"one_device"`` (the first GPU, else the CPU); ``"mirrored"`` (every local GPU,
            or every logical CPU device when there is no GPU, with all-reduce through one
            device since NCCL needs GPUs); ``"multi_worker"`` (MultiWorkerMirroredStrategy over
            the cluster in ``TF_CONFIG``); ``"auto"``: multi_worker when ``TF_CONFIG`` lists
            more than one worker, mirrored when there are several GPUs, else one_device.

    Each replica trains on whole P x K batches of its own, so the alignment pairs never cross
    replicas; the global batch is ``replicas x 2PK`` (see the README on scaling the rate).
    """
    # physical, not logical: listing logical devices starts the runtime, after which a
    # multi-worker strategy can no longer configure its collective ops
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        if _cluster_workers() > 1:
            name = "multi_worker"
        elif len(gpus) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    elif name == "mirrored":
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
        else:
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    elif name == "multi_worker":
        if _cluster_workers() < 1:
            raise ValueError("train.strategy=multi_worker needs TF_CONFIG with a cluster of workers")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise ValueError(f"unknown strategy {name!r}")
    logger.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, summaries and results."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )
