"""The training loop's periodic duties, one small object each: stop on a non-finite loss,
summaries, progress, checkpoints, weights, evaluation with the best-weights rule, pictures.

The loop (``Trainer.fit``) calls every hook at four points, in the order the hooks are given:
``before_epoch(epoch, step)``, ``after_step(step, logs)`` (``step`` counts the optimizer steps
taken, so the first step is 1), ``after_epoch(epoch, step)`` when an epoch completes and
``after_train(step)``. Each hook takes what it acts on in its constructor (callables, a
summary writer, a :class:`lba_tf.run_dir.RunDir`), so it can be tested without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import keras
import tensorflow as tf

from lba_tf.evaluation.ranked_lists import draw_ranked_lists, write_png
from lba_tf.evaluation.results import format_table
from lba_tf.log import logger


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the last good checkpoint."""


class Hook:
    """A duty of the training loop; every method does nothing unless overridden."""

    def before_epoch(self, epoch: int, step: int) -> None:
        """``epoch`` (0-based) starts, or resumes, at global ``step``."""

    def after_step(self, step: int, logs: Mapping[str, float]) -> None:
        """Optimizer step number ``step`` (1-based) is done; ``logs`` are its losses and accuracy."""

    def after_epoch(self, epoch: int, step: int) -> None:
        """``epoch`` (0-based) has completed at global ``step``."""

    def after_train(self, step: int) -> None:
        """Training stops at global ``step`` (the end, or ``max_steps``)."""


class NonFiniteStop(Hook):
    """Stop with :class:`TrainingDiverged` as soon as the total loss is NaN or infinite.

    The loss of step ``t`` is computed on the weights after ``t - 1`` updates, so a non-finite loss
    there condemns the state of step ``t - 1`` too; the checkpoint named as good is the newest of
    step ``t - 2`` or earlier, whose next loss was finite.

    Args:
        steps_per_epoch: to name the epoch in the message.
        last_checkpoint: the newest checkpoint's path of at most a given global step (or None).
    """

    def __init__(self, steps_per_epoch: int, last_checkpoint: Callable[[int], str | None]):
        self.steps_per_epoch = steps_per_epoch
        self.last_checkpoint = last_checkpoint

    def after_step(self, step, logs):
        if not math.isfinite(logs["total"]):
            good = self.last_checkpoint(step - 2)
            raise TrainingDiverged(
                f"non-finite loss at step {step} (epoch {(step - 1) // self.steps_per_epoch + 1}): "
                + ", ".join(f"{k}={v}" for k, v in logs.items())
                + f"; last good checkpoint: {good or 'none'}"
                + (" (resume from it with a lower train.lr or more warm-up)" if good else "")
            )


class Summaries(Hook):
    """Every log of every step as ``train/<name>``, and the learning rate as ``train/lr``.

    Args:
        writer: a ``tf.summary`` writer.
        learning_rate: the base learning rate in force at a global step.
    """

    def __init__(self, writer, learning_rate: Callable[[int], float]):
        self.writer = writer
        self.learning_rate = learning_rate

    def after_step(self, step, logs):
        with self.writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/lr", self.learning_rate(step - 1))


class Progress(Hook):
    """A progress bar per epoch with the step's logs, and a log line as each epoch starts.

    Args:
        steps_per_epoch: the bar's length.
        epochs: the number of epochs of the run, for the log line.
        learning_rate: the base learning rate in force at a global step.
        verbose: draw the bar (the chief only).
    """

    def __init__(self, steps_per_epoch: int, epochs: int, learning_rate: Callable[[int], float], verbose: bool = True):
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.learning_rate = learning_rate
        self.verbose = verbose
        self._bar = None

    def before_epoch(self, epoch, step):
        logger.info("epoch %d/%d (lr %.5f)", epoch + 1, self.epochs, self.learning_rate(step))
        self._bar = keras.utils.Progbar(
            self.steps_per_epoch, stateful_metrics=["lr"], verbose=1 if self.verbose else 0, unit_name="step"
        )

    def after_step(self, step, logs):
        in_epoch = (step - 1) % self.steps_per_epoch + 1
        self._bar.update(in_epoch, [*logs.items(), ("lr", self.learning_rate(step - 1))])


class Checkpoints(Hook):
    """Save the training state every ``every`` steps, at each epoch's end and when training stops
    (never twice at one step), so a killed run loses at most ``every`` steps.

    It goes last among the hooks: a checkpoint commits everything the others did and decided at
    its step (summaries, weights, evaluations, the best so far), so a run killed at any point and
    resumed from its newest checkpoint repeats exactly the work that was not committed.

    Args:
        save: saves the state as of a global step.
        every: steps between periodic saves.
        steps_per_epoch: an epoch's last step is saved by ``after_epoch``, after the epoch's
            other duties, never by ``after_step`` before them.
        start: the step training resumes from (already saved there).
        stop: the step training will stop at, saved by ``after_train`` for the same reason.
    """

    def __init__(
        self, save: Callable[[int], None], every: int, steps_per_epoch: int, start: int = 0, stop: int | None = None
    ):
        self.save, self.every, self.steps_per_epoch, self.stop = save, every, steps_per_epoch, stop
        self.saved_at = start

    def _save(self, step: int) -> None:
        if self.saved_at != step:
            self.save(step)
            self.saved_at = step

    def after_step(self, step, logs):
        if step % self.every == 0 and step % self.steps_per_epoch != 0 and step != self.stop:
            self._save(step)

    def after_epoch(self, epoch, step):
        self._save(step)

    def after_train(self, step):
        self._save(step)


class Figures(Hook):
    """A picture of the learned correspondences at each epoch's end.

    Args:
        log_figure: draws and writes the picture for a global step.
    """

    def __init__(self, log_figure: Callable[[int], None]):
        self.log_figure = log_figure

    def after_epoch(self, epoch, step):
        self.log_figure(step)


class LastWeights(Hook):
    """The weights as of each epoch's end and of the stop, as ``weights/last``.

    Args:
        save_weights: writes the model's weights under a name (``"last"``).
    """

    def __init__(self, save_weights: Callable[[str], None]):
        self.save_weights = save_weights

    def after_epoch(self, epoch, step):
        self.save_weights("last")

    def after_train(self, step):
        self.save_weights("last")


def best_score(results: Mapping) -> float:
    """The rule that picks the best weights: rank-1 of the dataset's first direction, ties broken
    by its mAP (both in percent)."""
    row = next(iter(results.values())).mean.row()
    return row["rank1"] + 1e-3 * row["mAP"]


class Decisions:
    """What a run has decided that the model and optimizer do not hold: the best score so far
    and the step last evaluated. These live in the checkpoint with the weights, so a run resumed
    from any checkpoint goes on deciding exactly as the uninterrupted run did (``best.json``,
    which may be ahead of the checkpoint after a kill, is the report of the decision, not its
    state)."""

    def __init__(self):
        self.best_score = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
        self.evaluated_at = tf.Variable(-1, dtype=tf.int64, trainable=False, name="evaluated_at")

    def variables(self) -> dict[str, tf.Variable]:
        """The state by name, for ``tf.train.Checkpoint``."""
        return {"best_score": self.best_score, "evaluated_at": self.evaluated_at}


class Evaluation(Hook):
    """Evaluate every ``every`` epochs, after the last epoch and when training stops (unless it
    just did); log the table and its summaries; draw its ranked lists; keep the best weights by
    :func:`best_score`.

    Each evaluation's ranked lists (the same queries every time) are drawn as
    ``<run>/pictures/ranked_<direction>_step<N>.png`` and as the TensorBoard image
    ``ranked/<direction>`` at that step (the chief only).

    The best weights are chosen on the test set itself (there is no validation split in these
    protocols), so they are saved as ``weights/best`` and labelled as such, never reported by default.
    What was decided (the best score, the last evaluated step) is kept in ``decisions``,
    which the trainer checkpoints after this hook has run at an epoch's end.

    Args:
        evaluate: runs the protocol on the current model; returns an
            ``lba_tf.evaluation.runner.EvaluationResults`` (``{direction: DirectionResult}`` and
            the ranked lists).
        every: epochs between evaluations.
        epochs: the run's number of epochs (the last one is always evaluated).
        writer: a ``tf.summary`` writer for ``eval/<direction>/<metric>``.
        run: the :class:`lba_tf.run_dir.RunDir` holding ``best.json`` and the pictures.
        save_weights: writes the model's weights under a name (``"best"``).
        chief: whether this worker writes ``best.json`` and the pictures.
        decisions: the run's :class:`Decisions` as restored from its checkpoint (a fresh run's by default).
    """

    def __init__(
        self,
        evaluate: Callable[[], dict],
        every: int,
        epochs: int,
        writer,
        run,
        save_weights: Callable[[str], None],
        chief: bool = True,
        decisions: Decisions | None = None,
    ):
        self.evaluate, self.every, self.epochs = evaluate, every, epochs
        self.writer, self.run, self.save_weights, self.chief = writer, run, save_weights, chief
        self.decisions = decisions or Decisions()
        self.results: dict = {}

    @property
    def best(self) -> float:
        return float(self.decisions.best_score.numpy())

    @property
    def evaluated_at(self) -> int:
        return int(self.decisions.evaluated_at.numpy())

    def _evaluate(self, step: int) -> None:
        self.results = self.evaluate()
        self.decisions.evaluated_at.assign(step)
        with self.writer.as_default(step=step):
            for direction, result in self.results.items():
                row = result.mean.row()
                for key in ("rank1", "mAP", "mINP"):
                    tf.summary.scalar(f"eval/{direction}/{key}", row[key])
            if self.chief:
                self._draw_ranked_lists(step)

    def _draw_ranked_lists(self, step: int) -> None:
        for direction, ranked in self.results.ranked_lists.items():
            if ranked.rows:
                picture = draw_ranked_lists(ranked, title=f"{direction}, step {step}")
                write_png(picture, self.run.ranked_picture_path(direction, step))
                tf.summary.image(f"ranked/{direction}", picture[None])

    def after_epoch(self, epoch, step):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            self._evaluate(step)
            logger.info("evaluation after epoch %d:\n%s", epoch + 1, format_table(self.results))
            score = best_score(self.results)
            if score > self.best:
                self.save_weights("best")
                if self.chief:
                    self.run.write_best(score, step)
                self.decisions.best_score.assign(score)

    def after_train(self, step):
        if not self.run.weights("best").exists():
            self.save_weights("best")
        if self.evaluated_at != step:
            self._evaluate(step)
        elif not self.results:
            # resumed from the stop's own checkpoint: evaluated, summaries written, the table lost with
            # the process; the same weights give the same table, recomputed without writing again
            self.results = self.evaluate()
