"""The learning-rate schedule: the recipe's per-epoch warm-up and step decay, by hand."""

import numpy as np
import pytest

from lba_tf.training.schedule import WarmupStepSchedule, epoch_learning_rate

# Spec, section 6: e < 10: base * (e + 1) / 10; 10 <= e < 20: base; 20 <= e < 50: base * 0.1;
# e >= 50: base * 0.01.
HAND = {0: 0.01, 1: 0.02, 4: 0.05, 9: 0.1, 10: 0.1, 19: 0.1, 20: 0.01, 49: 0.01, 50: 0.001, 80: 0.001}


@pytest.mark.parametrize("epoch,lr", sorted(HAND.items()))
def test_epoch_rate_matches_the_recipe(epoch, lr):
    assert epoch_learning_rate(epoch, 0.1) == pytest.approx(lr, rel=1e-12)


def test_keras_schedule_is_constant_within_an_epoch_and_follows_the_recipe():
    steps = 7
    schedule = WarmupStepSchedule(0.1, steps_per_epoch=steps)
    for epoch, lr in HAND.items():
        for step in (epoch * steps, epoch * steps + steps - 1):
            assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), (epoch, step)


def test_schedule_without_warmup_or_milestones():
    schedule = WarmupStepSchedule(0.5, steps_per_epoch=3, warmup_epochs=0, milestones=())
    np.testing.assert_allclose([float(schedule(s)) for s in range(0, 30, 5)], 0.5)


def test_schedule_round_trips_its_config():
    schedule = WarmupStepSchedule(0.2, 11, 3, (5, 9), 0.5)
    again = WarmupStepSchedule.from_config(schedule.get_config())
    assert [float(again(s)) for s in range(0, 120, 7)] == [float(schedule(s)) for s in range(0, 120, 7)]
