"""The training step: one function of (model, optimizer, batch) returning the step's logs.

The custom loop (``lba_tf.training.trainer``) runs it under its ``tf.distribute`` strategy, and
``LbAModel.train_step`` runs it for ``model.fit``; both train the same way.
"""

from __future__ import annotations

import tensorflow as tf

from lba_tf.models.lba import LOSS_NAMES


def train_step(model, optimizer, batch) -> dict[str, tf.Tensor]:
    """One optimizer step on one P x K batch (per replica under a strategy).

    The loss is divided by the number of replicas in sync, so that the gradients the optimizer
    sums across replicas are those of the mean loss; with mixed_float16 the optimizer
    (a ``LossScaleOptimizer``) scales the loss and unscales the gradients.

    Args:
        model: an ``LbAModel`` (anything with ``compute_losses`` and ``trainable_variables``).
        optimizer: a Keras optimizer built for the model's trainable variables.
        batch: ``(images, labels)``: float32 ``[2PK, H, W, 3]`` (the RGB half, then the IR half,
            identity-major) and int32 ``[2PK]`` training labels.

    Returns:
        Scalars: every loss of :data:`lba_tf.models.lba.LOSS_NAMES` the model computes (``ic*``
        and ``dt*`` in full mode), ``total``, and ``accuracy`` (the identity classifier's on the batch).
    """
    images, labels = batch
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
        out = model.compute_losses(images, labels, training=True)
        scaled = optimizer.scale_loss(out["total"] / replicas)
    grads = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    predicted = tf.argmax(out["logits"], axis=-1, output_type=tf.int32)
    logs = {name: out[name] for name in LOSS_NAMES if name in out}
    logs["accuracy"] = tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))
    return logs
