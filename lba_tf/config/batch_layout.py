"""The training batch layout: P identities x K images per modality must be one the alignment can pair."""

from __future__ import annotations

from lba_tf.config.loader import ConfigError
from lba_tf.config.schema import Config


def alignment_can_pair(num_identities: int, num_instances: int) -> bool:
    """The alignment's rule: each image gets negatives of K distinct other identities of its batch,
    so ``P - 1 >= K``. The one statement of it, for the config check here and the model's own."""
    return num_identities - 1 >= num_instances


def check_batch_layout(config: Config) -> None:
    """Refuse a batch of P identities x K images that the configured method cannot train on.

    The full method's alignment gives every image a negative target in each of K distinct other
    identities of its batch, so it needs ``P - 1 >= K``; the baseline has no such limit. The
    sampler's own limit, P no more than the training identities, needs the dataset's listing
    (:func:`lba_tf.data.checks.check_training_data`).

    Raises:
        ConfigError: one line naming both settings, the rule and the values that satisfy it.
    """
    p, k = config.data.num_identities, config.data.num_instances
    if config.model.method == "full" and not alignment_can_pair(p, k):
        raise ConfigError(
            f"data.num_identities={p} with data.num_instances={k}: model.method=full pairs each image with "
            f"images of {k} distinct other identities of its batch, so it needs data.num_identities - 1 >= "
            f"data.num_instances; set data.num_identities to at least {k + 1}, data.num_instances to at most "
            f"{p - 1}, or model.method=baseline"
        )
