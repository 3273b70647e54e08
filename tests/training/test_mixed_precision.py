"""Mixed precision through the Trainer: float16 with a checkpointed loss scale, bfloat16 without one.

The Keras dtype policy is global: every test here leaves it float32 (``float32_policy``), as a
Trainer of another test in the same process expects to find it.
"""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import load_config
from lba_tf.training.trainer import Trainer
from tests.tiny import TINY_OVERRIDES

STEPS = 4
"""One epoch of four steps: a resume at step 2 is mid-epoch."""
RESUME_AT = 2
# Two runs in one process can differ in the last bit of a float32 reduction (see the resume test of
# tests/training/test_trainer.py); 4 ulps. A step missed or repeated moves weights by more than 1e-3.
# Measured (with the resume working): identical weights when this module runs alone.
SAME_PROCESS_RTOL = 4 * 2.0**-23


def _config(precision, *extra):
    return load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"train.precision={precision}",
            "train.epochs=1",
            f"train.steps_per_epoch={STEPS}",
            "train.warmup_epochs=0",
            "train.milestones=[]",
            f"train.keep_checkpoints={STEPS + 1}",
            "data.eval_trials=1",
            *extra,
        ],
    )


def _reset_policy():
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    _reset_policy()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _new_process_trainer(config, run_dir, cache_dir):
    """A Trainer built as in a new process (one per process, as ``lba_tf.train`` builds it): Keras's
    global state, which numbers auto-named objects, cleared first."""
    keras.backend.clear_session()
    return Trainer(config, run_dir, cache_dir=cache_dir)


def _fit(precision, run_dir, cache_dir, *extra, max_steps=None):
    trainer = _new_process_trainer(_config(precision, *extra), run_dir, cache_dir)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        _reset_policy()
    return trainer


@pytest.fixture(scope="module")
def float16_run(tmp_path_factory, cache_dir):
    """An uninterrupted mixed_float16 run of ``STEPS`` steps: ``(trainer, run directory)``."""
    run_dir = tmp_path_factory.mktemp("float16")
    return _fit("mixed_float16", run_dir, cache_dir), run_dir


@pytest.fixture(scope="module")
def float16_half_run(tmp_path_factory, cache_dir):
    """The same run stopped after ``RESUME_AT`` steps: ``(trainer, run directory)``."""
    run_dir = tmp_path_factory.mktemp("float16-half")
    return _fit("mixed_float16", run_dir, cache_dir, max_steps=RESUME_AT), run_dir


def _logged_losses(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    return {
        tag[len("train/") :]: [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
        if tag.startswith("train/") and tag not in ("train/lr", "train/accuracy")
    }


def _loss_scale_state(optimizer):
    return float(optimizer.dynamic_scale.numpy()), int(optimizer.step_counter.numpy())


def _checkpointed(trainer, name):
    """The value of the optimizer variable named ``name`` in the newest checkpoint."""
    path = trainer.manager.latest_checkpoint
    suffix = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    keys = [key for key, _ in tf.train.list_variables(path) if key.startswith("optimizer/") and key.endswith(suffix)]
    assert len(keys) == 1, keys
    return tf.train.load_variable(path, keys[0])


def _assert_float32_variables(model):
    floating = [v for v in model.weights if "float" in str(v.dtype)]
    assert len(floating) > 20
    assert {str(v.dtype) for v in floating} == {"float32"}


def test_float16_trains_with_a_loss_scale_optimizer_finite_losses_and_float32_variables(float16_run):
    trainer, run_dir = float16_run
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.dtype_policy.name == "mixed_float16"
    assert trainer.model.dtype_policy.compute_dtype == "float16"
    _assert_float32_variables(trainer.model)
    losses = _logged_losses(run_dir)
    assert {"id", "triplet", "ic3", "ic4", "dt3", "dt4", "total"} <= set(losses)
    for name, values in losses.items():
        assert len(values) == STEPS and np.all(np.isfinite(values)), (name, values)
    assert all(value > 0 for value in losses["total"])


def test_float16_loss_scale_is_dynamic_and_in_the_checkpoint(float16_run):
    trainer, _ = float16_run
    scale, counter = _loss_scale_state(trainer.optimizer)
    # dynamic: a power of two, halved from 2**15 at each step whose float16 gradients overflow
    assert scale <= 2.0**15 and np.log2(scale) == int(np.log2(scale))
    assert _checkpointed(trainer, "dynamic_scale") == scale
    assert _checkpointed(trainer, "step_counter") == counter


def test_a_new_trainer_restores_the_loss_scale_and_weights(float16_half_run, cache_dir):
    stopped, run_dir = float16_half_run
    resumed = _new_process_trainer(_config("mixed_float16"), run_dir, cache_dir)
    resumed.restore()
    assert _loss_scale_state(resumed.optimizer) == _loss_scale_state(stopped.optimizer)
    for restored, saved in zip(resumed.model.weights, stopped.model.weights, strict=True):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=restored.path)


def test_a_second_trainer_in_the_same_process_restores_a_float16_checkpoint(float16_half_run, cache_dir):
    stopped, run_dir = float16_half_run
    keras.backend.clear_session()
    keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())  # as an earlier Trainer in this process made one
    resumed = Trainer(_config("mixed_float16"), run_dir, cache_dir=cache_dir)
    resumed.restore()
    assert _loss_scale_state(resumed.optimizer) == _loss_scale_state(stopped.optimizer)


def test_float16_resumes_at_its_step_to_the_weights_and_loss_scale_of_an_uninterrupted_run(
    float16_run, float16_half_run, cache_dir, tmp_path
):
    uninterrupted, _ = float16_run
    _, half_dir = float16_half_run
    run_dir = tmp_path / "run"
    shutil.copytree(half_dir, run_dir)
    resumed = _new_process_trainer(_config("mixed_float16"), run_dir, cache_dir)
    assert resumed.restore() == RESUME_AT
    resumed.fit()
    assert resumed.global_step == uninterrupted.global_step == STEPS
    assert _loss_scale_state(resumed.optimizer) == _loss_scale_state(uninterrupted.optimizer)
    for a, b in zip(resumed.model.weights, uninterrupted.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=SAME_PROCESS_RTOL, atol=0, err_msg=a.path)


def test_bfloat16_trains_without_loss_scaling_with_finite_losses_and_float32_variables(tmp_path, cache_dir):
    trainer = _fit("mixed_bfloat16", tmp_path, cache_dir, "model.method=baseline", max_steps=RESUME_AT)
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.dtype_policy.compute_dtype == "bfloat16"
    assert trainer.global_step == RESUME_AT
    _assert_float32_variables(trainer.model)
    losses = _logged_losses(tmp_path)
    assert {"id", "triplet", "total"} <= set(losses)
    for name, values in losses.items():
        assert len(values) == RESUME_AT and np.all(np.isfinite(values)), (name, values)


def test_a_float32_trainer_after_a_mixed_one_builds_a_float32_model(tmp_path, cache_dir):
    keras.mixed_precision.set_dtype_policy("mixed_float16")  # as a mixed Trainer leaves it
    trainer = Trainer(_config("float32"), tmp_path, cache_dir=cache_dir)
    assert trainer.model.dtype_policy.name == "float32"
