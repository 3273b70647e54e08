"""The training loop: set-up (strategy, data, model, optimizer, checkpoint) and a loop of
distributed steps whose periodic duties are the hooks of ``lba_tf.training.hooks``."""

from __future__ import annotations

import pathlib
import time

import keras
import tensorflow as tf

from lba_tf.config import Config, check_batch_layout, check_initialisation
from lba_tf.data.datasets.registry import build_dataset
from lba_tf.data.pipeline import distributed_dataset_fn, load_images, training_dataset
from lba_tf.data.sampler import IdentitySampler
from lba_tf.evaluation.results import results_json
from lba_tf.evaluation.runner import evaluate_model
from lba_tf.log import logger
from lba_tf.models.lba import build_model
from lba_tf.run_dir import RunDir
from lba_tf.runtime import set_determinism, set_tf32
from lba_tf.training import checkpoints, events
from lba_tf.training.hooks import (
    Checkpoints,
    Decisions,
    Evaluation,
    Figures,
    Hook,
    LastWeights,
    NonFiniteStop,
    Progress,
    Summaries,
    TrainingDiverged,
)
from lba_tf.training.optimizer import build_optimizer
from lba_tf.training.schedule import epoch_learning_rate
from lba_tf.training.step import train_step
from lba_tf.training.strategy import is_chief, make_strategy
from lba_tf.training.visualize import correspondence_figure

__all__ = ["Trainer", "TrainingDiverged", "build_optimizer"]


def _by_path(variables) -> dict:
    """Variables keyed by their Keras path, for tf.train.Checkpoint.

    Keras 3 layers keep sub-layers held in lists (the residual blocks) out of TensorFlow's
    object graph, so checkpointing the model object would silently skip their BatchNorm
    statistics; naming every variable explicitly checkpoints all of them.
    """
    by_path = {v.path: v for v in variables}
    if len(by_path) != len(variables):
        raise ValueError("variable paths are not unique; the checkpoint would lose some")
    return by_path


class Trainer:
    """Trains an LbA model as a :class:`Config` describes, in a run directory.

    The run directory (:class:`lba_tf.run_dir.RunDir`, whose docstring lists its layout) gets the
    checkpoints (model, optimizer and step; the sampler and augmentation are pure functions of
    the step, so nothing else is needed to resume exactly), TensorBoard summaries, the last and
    the best-on-test weights, ``run.json`` and, when training ends, ``results.json``.

    Args:
        config: the run's settings.
        run_dir: where everything is written (a path or a ``RunDir``); an existing checkpoint
            there is resumed.
        cache_dir: where the synthetic dataset is generated.
    """

    def __init__(self, config: Config, run_dir: str | pathlib.Path | RunDir, cache_dir: str = ".cache"):
        self.config = config
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.cache_dir = cache_dir
        train, data = config.train, config.data
        check_initialisation(config)
        check_batch_layout(config)
        # first: collective ops of a multi-worker strategy must be set up before any other op
        self.strategy = make_strategy(train.strategy)
        self.chief = is_chief(self.strategy)
        set_tf32(train.tf32)
        set_determinism(train.deterministic)
        keras.mixed_precision.set_dtype_policy(train.precision)  # global in Keras: float32 too, always
        keras.utils.set_random_seed(train.seed)

        self.dataset = build_dataset(data, cache_dir=cache_dir)
        cache = load_images(
            self.dataset.root, self.dataset.train, data.image_height, data.image_width, skip_corrupt=data.skip_corrupt
        )
        self.sampler = IdentitySampler(
            cache.records,
            data.num_identities,
            data.num_instances,
            seed=train.seed,
            steps_per_epoch=train.steps_per_epoch,
        )
        self.images = cache.images
        self.steps_per_epoch = self.sampler.steps_per_epoch
        logger.info(
            "training set: %d identities, %d images; %d steps per epoch of %d images x %d replica(s)",
            self.dataset.num_classes,
            len(cache.records),
            self.steps_per_epoch,
            self.sampler.batch_size,
            self.strategy.num_replicas_in_sync,
        )

        with self.strategy.scope():
            self.model = build_model(config, self.dataset.num_classes)
            self.optimizer = build_optimizer(train, self.steps_per_epoch)
            self.model.compile(optimizer=self.optimizer, jit_compile=False)
            self.optimizer.build(self.model.trainable_variables)
        self.decisions = Decisions()
        self.checkpoint = tf.train.Checkpoint(
            model=_by_path(self.model.weights),
            optimizer=_by_path(self.optimizer.variables),
            decisions=self.decisions.variables(),
        )
        # every worker takes part in saving; only the chief's copy is kept in the run directory
        checkpoint_dir = (
            self.run.checkpoints
            if self.chief
            else self.run.path / f".worker-{self.strategy.cluster_resolver.task_id}-checkpoints"
        )
        # the newest checkpoint that reads back whole (damaged newer ones moved aside), before the
        # manager reads the state file that this may rewrite
        self._resume_from = checkpoints.repair(checkpoint_dir)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(checkpoint_dir), max_to_keep=train.keep_checkpoints
        )
        self.writer = (
            tf.summary.create_file_writer(str(self.run.tensorboard)) if self.chief else tf.summary.create_noop_writer()
        )
        self._step_fn = None
        self._figure_batch = None
        self.last_results: dict = {}

    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Resume from the newest intact checkpoint in the run directory; returns the global step.

        Summaries of later steps (written before a kill, after that checkpoint) are removed, as
        the resumed run writes them again.
        """
        if self._resume_from:
            self.checkpoint.restore(self._resume_from).assert_consumed()
            logger.info("resumed from %s at step %d", self._resume_from, self.global_step)
        if self.chief:
            events.drop_after(self.run.tensorboard, self.global_step)
        return self.global_step

    def _distributed_step(self):
        if self._step_fn is None:
            strategy = self.strategy

            @tf.function
            def step(iterator):
                per_replica = strategy.run(
                    lambda batch: train_step(self.model, self.optimizer, batch), args=(next(iterator),)
                )
                return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

            self._step_fn = step
        return self._step_fn

    def _dataset(self, epoch: int, step: int):
        fn = distributed_dataset_fn(
            self.images,
            self.sampler,
            self.config.data.augment,
            self.config.train.seed,
            epoch_start=epoch,
            step_start=step,
        )
        return self.strategy.distribute_datasets_from_function(fn)

    def _checkpoint_of_at_most(self, step: int) -> str | None:
        """The newest kept checkpoint of global step ``step`` or earlier."""
        kept = [p for p in self.manager.checkpoints if int(p.rsplit("-", 1)[1]) <= step]
        return kept[-1] if kept else None

    def _save(self) -> str:
        # summaries first: every event up to a checkpoint's step is on disk once it exists
        self.writer.flush()
        return self.manager.save(checkpoint_number=self.global_step)

    def _save_weights(self, name: str) -> None:
        if self.chief:
            path = self.run.weights(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{name}.tmp.weights.h5")
            self.model.save_weights(tmp)
            tmp.replace(path)

    def evaluate(self, trials: int | None = None) -> dict:
        data = self.config.data
        return evaluate_model(
            self.model,
            self.dataset,
            height=data.image_height,
            width=data.image_width,
            trials=trials or data.eval_trials,
            batch_size=self.config.eval.batch_size,
            rerank=self.config.eval.rerank,
            skip_corrupt=data.skip_corrupt,
        )

    def _learning_rate(self, step: int) -> float:
        """The base learning rate in force at (0-based) global ``step``."""
        train = self.config.train
        return epoch_learning_rate(
            step // self.steps_per_epoch, train.lr, train.warmup_epochs, train.milestones, train.lr_decay
        )

    def hooks(self, start: int, stop: int) -> tuple[list[Hook], Evaluation]:
        """The loop's duties from global step ``start`` to ``stop``, in the order they run, and the
        evaluation among them."""
        train = self.config.train
        evaluation = Evaluation(
            self.evaluate,
            train.eval_every,
            train.epochs,
            self.writer,
            self.run,
            self._save_weights,
            chief=self.chief,
            decisions=self.decisions,
        )
        # the checkpoint last: it commits what the hooks before it did and decided at that step, so
        # a kill before it repeats their work from the previous checkpoint, a kill after it none
        return [
            NonFiniteStop(self.steps_per_epoch, self._checkpoint_of_at_most),
            Summaries(self.writer, self._learning_rate),
            Progress(self.steps_per_epoch, train.epochs, self._learning_rate, verbose=self.chief),
            Figures(self._log_figure),
            LastWeights(self._save_weights),
            evaluation,
            Checkpoints(
                lambda step: self._save(), train.checkpoint_every, self.steps_per_epoch, start=start, stop=stop
            ),
        ], evaluation

    def fit(self, max_steps: int | None = None) -> dict:
        """Train to the configured number of epochs (or ``max_steps`` global steps), evaluate,
        write ``results.json`` and return its content."""
        spe = self.steps_per_epoch
        total_steps = self.config.train.epochs * spe
        total_steps = total_steps if max_steps is None else min(max_steps, total_steps)
        step = self.restore()
        self._write_run_info()
        hooks, evaluation = self.hooks(step, total_steps)
        step_fn = self._distributed_step()
        iterator = iter(self._dataset(step // spe, step % spe))
        started = time.time()
        while step < total_steps:
            epoch = step // spe
            for hook in hooks:
                hook.before_epoch(epoch, step)
            while True:
                logs = {k: float(v) for k, v in step_fn(iterator).items()}
                step += 1
                for hook in hooks:
                    hook.after_step(step, logs)
                if step % spe == 0 or step >= total_steps:
                    break
            if step % spe == 0:
                for hook in hooks:
                    hook.after_epoch(epoch, step)
        elapsed = time.time() - started
        for hook in hooks:
            hook.after_train(step)
        self.last_results = evaluation.results
        payload = {
            "config": self.config.name,
            "step": step,
            "epoch": step / spe,
            "train_seconds": elapsed,
            "weights": "last epoch (weights/last.weights.h5)",
            "results": results_json(self.last_results),
        }
        if self.chief:
            self.run.write_results(payload)
        self.writer.flush()
        return payload

    def _log_figure(self, step: int) -> None:
        if not self.chief or self.model.alignment is None:
            return
        if self._figure_batch is None:  # always the same batch, to watch the matches sharpen
            first = training_dataset(
                self.images, self.sampler, self.config.data.augment, self.config.train.seed, epochs=1
            )
            self._figure_batch = next(iter(first))
        figure = correspondence_figure(self.model, self._figure_batch[0])
        with self.writer.as_default(step=step):
            tf.summary.image("correspondence/rgb_ir_warped", figure)

    def _write_run_info(self) -> None:
        if self.chief:
            self.run.write_info(
                num_classes=self.dataset.num_classes,
                steps_per_epoch=self.steps_per_epoch,
                image_height=self.config.data.image_height,
                image_width=self.config.data.image_width,
            )
