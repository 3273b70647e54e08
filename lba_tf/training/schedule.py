"""The learning-rate schedule of the recipe: per-epoch linear warm-up, then step decay."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def epoch_learning_rate(
    epoch: int, base_lr: float, warmup_epochs: int = 10, milestones: Sequence[int] = (20, 50), decay: float = 0.1
) -> float:
    """The learning rate of 0-based ``epoch``, in plain Python (for logs and tests).

    ``epoch < warmup_epochs``: ``base_lr * (epoch + 1) / warmup_epochs``; afterwards
    ``base_lr * decay ** (number of milestones <= epoch)``.
    """
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    return base_lr * decay ** sum(epoch >= m for m in milestones)


@keras.saving.register_keras_serializable(package="lba_tf")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """:func:`epoch_learning_rate` as a Keras schedule of the optimizer's step counter.

    The rate is constant within an epoch (epoch = step // steps_per_epoch), as the recipe
    changes it only between epochs.

    Args:
        base_lr: the rate after warm-up.
        steps_per_epoch: optimizer steps in one epoch.
        warmup_epochs: epochs of linear warm-up, starting at ``base_lr / warmup_epochs``.
        milestones: epochs at which the rate is multiplied by ``decay``.
        decay: the multiplier at each milestone.

    Examples:

    >>> schedule = WarmupStepSchedule(0.1, steps_per_epoch=696)
    >>> float(schedule(0)), float(schedule(696 * 30))
    (0.01, 0.01)
    """

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        warmup_epochs: int = 10,
        milestones: Sequence[int] = (20, 50),
        decay: float = 0.1,
    ):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = int(warmup_epochs)
        self.milestones = tuple(int(m) for m in milestones)
        self.decay = float(decay)

    def __call__(self, step):
        epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
        epoch_f = tf.cast(epoch, tf.float32)
        warm = self.base_lr * (epoch_f + 1.0) / max(self.warmup_epochs, 1)
        passed = (
            tf.add_n([tf.cast(epoch >= m, tf.float32) for m in self.milestones])
            if self.milestones
            else tf.constant(0.0)
        )
        after = self.base_lr * tf.pow(tf.constant(self.decay, tf.float32), passed)
        return tf.where(epoch < self.warmup_epochs, warm, after)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "milestones": list(self.milestones),
            "decay": self.decay,
        }
