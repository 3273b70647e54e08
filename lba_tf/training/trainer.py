"""The training loop: distributed steps, checkpoints and resume, TensorBoard, evaluation."""

from __future__ import annotations

import json
import math
import pathlib
import time

import keras
import tensorflow as tf

from lba_tf.config import Config, check_initialisation
from lba_tf.data.datasets.registry import build_dataset
from lba_tf.data.pipeline import distributed_dataset_fn, load_images, training_dataset
from lba_tf.data.sampler import IdentitySampler
from lba_tf.evaluation.runner import evaluate_model, format_table, results_json, summarize_result
from lba_tf.log import logger
from lba_tf.models.lba import LOSS_NAMES, build_model
from lba_tf.runtime import set_tf32
from lba_tf.training.optimizer import build_optimizer
from lba_tf.training.schedule import epoch_learning_rate
from lba_tf.training.strategy import is_chief, make_strategy
from lba_tf.training.visualize import correspondence_figure

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


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the last good checkpoint."""


class Trainer:
    """Trains an LbA model as a :class:`Config` describes, in ``run_dir``.

    The run directory ends up holding ``config.yaml`` (written by the caller), ``checkpoints/``
    (model, optimizer and step; the sampler and augmentation are pure functions of the step, so
    nothing else is needed to resume exactly), ``tensorboard/``, ``weights/last.weights.h5``
    (the last epoch: what evaluation and export use, and what the authors report),
    ``weights/best.weights.h5`` (the epoch whose evaluation scored highest; chosen on the test set,
    so optimistic), ``run.json`` (what export and evaluation need to rebuild the model) and
    ``results.json`` (the last epoch's evaluation).

    Args:
        config: the run's settings.
        run_dir: where everything is written; an existing checkpoint there is resumed.
        cache_dir: where the synthetic dataset is generated.
    """

    def __init__(self, config: Config, run_dir: str | pathlib.Path, cache_dir: str = ".cache"):
        self.config = config
        self.run_dir = pathlib.Path(run_dir)
        self.cache_dir = cache_dir
        train, data = config.train, config.data
        check_initialisation(config)
        # first: collective ops of a multi-worker strategy must be set up before any other op
        self.strategy = make_strategy(train.strategy)
        self.chief = is_chief(self.strategy)
        set_tf32(train.tf32)
        if train.precision != "float32":
            keras.mixed_precision.set_dtype_policy(train.precision)
        keras.utils.set_random_seed(train.seed)

        self.dataset = build_dataset(data, cache_dir=cache_dir)
        cache = load_images(self.dataset.root, self.dataset.train, data.image_height, data.image_width,
                            skip_corrupt=data.skip_corrupt)
        self.sampler = IdentitySampler(cache.records, data.num_identities, data.num_instances,
                                       seed=train.seed, steps_per_epoch=train.steps_per_epoch)
        self.images = cache.images
        self.steps_per_epoch = self.sampler.steps_per_epoch
        logger.info("training set: %d identities, %d images; %d steps per epoch of %d images x %d replica(s)",
                    self.dataset.num_classes, len(cache.records), self.steps_per_epoch,
                    self.sampler.batch_size, self.strategy.num_replicas_in_sync)

        with self.strategy.scope():
            self.model = build_model(config, self.dataset.num_classes)
            self.optimizer = build_optimizer(train, self.steps_per_epoch)
            self.model.compile(optimizer=self.optimizer, jit_compile=False)
            self.optimizer.build(self.model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=_by_path(self.model.weights),
                                              optimizer=_by_path(self.optimizer.variables))
        # every worker takes part in saving; only the chief's copy is kept in the run directory
        checkpoint_dir = self.run_dir / "checkpoints" if self.chief else \
            self.run_dir / f".worker-{self.strategy.cluster_resolver.task_id}-checkpoints"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(checkpoint_dir),
                                                  max_to_keep=train.keep_checkpoints)
        self.writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard")) if self.chief \
            else tf.summary.create_noop_writer()
        self._step_fn = None
        self._figure_batch = None
        self.last_results: dict = {}

    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Resume from the newest checkpoint in the run directory; returns the global step."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_consumed()
            logger.info("resumed from %s at step %d", latest, self.global_step)
        return self.global_step

    def _train_step(self, data):
        images, labels = data
        model = self.model
        with tf.GradientTape() as tape:
            out = model.compute_losses(images, labels, training=True)
            loss = out["total"] / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        self.optimizer.apply(grads, model.trainable_variables)
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(out["logits"], axis=-1, output_type=tf.int32), labels), tf.float32))
        logs = {name: out[name] for name in LOSS_NAMES if name in out}
        logs["accuracy"] = accuracy
        return logs

    def _distributed_step(self):
        if self._step_fn is None:
            strategy = self.strategy

            @tf.function
            def step(iterator):
                per_replica = strategy.run(self._train_step, args=(next(iterator),))
                return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                        for k, v in per_replica.items()}

            self._step_fn = step
        return self._step_fn

    def _dataset(self, epoch: int, step: int):
        fn = distributed_dataset_fn(self.images, self.sampler, self.config.data.augment,
                                    self.config.train.seed, epoch_start=epoch, step_start=step)
        return self.strategy.distribute_datasets_from_function(fn)

    def _save(self) -> str:
        return self.manager.save(checkpoint_number=self.global_step)

    def _save_weights(self, name: str) -> None:
        if self.chief:
            path = self.run_dir / "weights" / f"{name}.weights.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{name}.tmp.weights.h5")
            self.model.save_weights(tmp)
            tmp.replace(path)

    def evaluate(self, trials: int | None = None) -> dict:
        data = self.config.data
        return evaluate_model(self.model, self.dataset, height=data.image_height, width=data.image_width,
                              trials=trials or data.eval_trials, batch_size=self.config.eval.batch_size,
                              rerank=self.config.eval.rerank, skip_corrupt=data.skip_corrupt)

    def _log_evaluation(self, results: dict, step: int) -> float:
        with self.writer.as_default(step=step):
            for direction, res in results.items():
                row = summarize_result(res.mean)
                for key in ("rank1", "mAP", "mINP"):
                    tf.summary.scalar(f"eval/{direction}/{key}", row[key])
        first = next(iter(results.values()))
        row = summarize_result(first.mean)
        return row["rank1"] + 1e-3 * row["mAP"]

    def fit(self, max_steps: int | None = None) -> dict:
        """Train to the configured number of epochs (or ``max_steps`` global steps), evaluate,
        write ``results.json`` and return its content."""
        train = self.config.train
        spe = self.steps_per_epoch
        total_steps = train.epochs * spe if max_steps is None else min(max_steps, train.epochs * spe)
        start = self.restore()
        self._write_run_info()
        best_path = self.run_dir / "best.json"
        best = json.loads(best_path.read_text())["score"] if best_path.exists() else -math.inf
        step_fn = self._distributed_step()
        iterator = iter(self._dataset(start // spe, start % spe))
        last_saved, started = start, time.time()
        global_step, evaluated_at = start, -1
        while global_step < total_steps:
            epoch = global_step // spe
            lr = epoch_learning_rate(epoch, train.lr, train.warmup_epochs, train.milestones, train.lr_decay)
            in_epoch = global_step % spe
            bar = keras.utils.Progbar(spe, stateful_metrics=["lr"], verbose=1 if self.chief else 0,
                                      unit_name="step")
            logger.info("epoch %d/%d (lr %.5f)", epoch + 1, train.epochs, lr)
            while in_epoch < spe and global_step < total_steps:
                logs = {k: float(v) for k, v in step_fn(iterator).items()}
                global_step += 1
                in_epoch += 1
                if not math.isfinite(logs["total"]):
                    raise TrainingDiverged(
                        f"non-finite loss at step {global_step} (epoch {epoch + 1}): "
                        + ", ".join(f"{k}={v}" for k, v in logs.items())
                        + f"; last good checkpoint: {self.manager.latest_checkpoint or 'none'}")
                with self.writer.as_default(step=global_step):
                    for k, v in logs.items():
                        tf.summary.scalar(f"train/{k}", v)
                    tf.summary.scalar("train/lr", lr)
                bar.update(in_epoch, [(k, v) for k, v in logs.items()] + [("lr", lr)])
                if global_step % train.checkpoint_every == 0:
                    self._save()
                    last_saved = global_step
            if in_epoch == spe:  # epoch end
                if last_saved != global_step:
                    self._save()
                    last_saved = global_step
                self._log_figure(global_step)
                self._save_weights("last")
                if (epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs:
                    results = self.last_results = self.evaluate()
                    evaluated_at = global_step
                    logger.info("evaluation after epoch %d:\n%s", epoch + 1, format_table(results))
                    score = self._log_evaluation(results, global_step)
                    if score > best:
                        best = score
                        self._save_weights("best")
                        if self.chief:
                            best_path.write_text(json.dumps({"score": best, "step": global_step,
                                                             "chosen_on": "the test set"}))
        if last_saved != global_step:
            self._save()
        self._save_weights("last")
        if not (self.run_dir / "weights" / "best.weights.h5").exists():
            self._save_weights("best")
        elapsed = time.time() - started
        if evaluated_at != global_step:
            self.last_results = self.evaluate()
        results = self.last_results
        payload = {"config": self.config.name, "step": global_step, "epoch": global_step / spe,
                   "train_seconds": elapsed, "weights": "last epoch (weights/last.weights.h5)",
                   "results": results_json(results)}
        if self.chief:
            (self.run_dir / "results.json").write_text(json.dumps(payload, indent=2))
        self.writer.flush()
        return payload

    def _log_figure(self, step: int) -> None:
        if not self.chief or self.model.alignment is None:
            return
        if self._figure_batch is None:  # always the same batch, to watch the matches sharpen
            first = training_dataset(self.images, self.sampler, self.config.data.augment,
                                     self.config.train.seed, epochs=1)
            self._figure_batch = next(iter(first))
        figure = correspondence_figure(self.model, self._figure_batch[0])
        with self.writer.as_default(step=step):
            tf.summary.image("correspondence/rgb_ir_warped", figure)

    def _write_run_info(self) -> None:
        if self.chief:
            info = {"num_classes": self.dataset.num_classes, "steps_per_epoch": self.steps_per_epoch,
                    "image_height": self.config.data.image_height,
                    "image_width": self.config.data.image_width}
            (self.run_dir / "run.json").write_text(json.dumps(info, indent=2))
