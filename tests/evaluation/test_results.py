"""Results: one trial's metrics to the mean over trials, the chance level, percent rows, the table
and the JSON of results.json."""

import json

import numpy as np
import pytest

from lba_tf.data.records import ImageRecord, TestSplit
from lba_tf.evaluation.metrics import evaluate
from lba_tf.evaluation.results import (
    CHANCE_SEED,
    DirectionResult,
    Metrics,
    chance_level,
    format_table,
    mean_over_trials,
    results_json,
)


def _metrics(cmc, mAP, mINP):
    return Metrics(np.array(cmc, np.float64), mAP, mINP)


def _result():
    trials = [_metrics([0.5] * 20, 0.25, 0.5), _metrics([1.0] * 20, 0.75, 0.25)]
    return DirectionResult(
        "infrared_to_visible", trials, _metrics([0.1] * 20, 0.05, 0.01), "queries: 2 infrared; gallery: 3 visible"
    )


def test_mean_over_trials_averages_each_metric():
    mean = mean_over_trials([_metrics([0.5, 1.0], 0.25, 0.5), _metrics([0.0, 0.5], 0.75, 0.25)])
    np.testing.assert_allclose(mean.cmc, [0.25, 0.75])
    assert mean.mAP == pytest.approx(0.5)
    assert mean.mINP == pytest.approx(0.375)
    with pytest.raises(ValueError, match="no trial results"):
        mean_over_trials([])


def test_row_is_in_percent_and_stops_at_the_curve_length():
    full = _metrics(np.arange(1, 21) / 20, 0.5, 0.25).row()
    assert full == {"rank1": 5.0, "rank5": 25.0, "rank10": 50.0, "rank20": 100.0, "mAP": 50.0, "mINP": 25.0}
    assert list(_metrics([0.5] * 6, 0.5, 0.25).row()) == ["rank1", "rank5", "mAP", "mINP"]


def test_metrics_of_an_evaluation():
    result = evaluate(np.array([[0.1, 0.2]]), [1], [2, 1], [1], [2, 2], "regdb", max_rank=2)
    metrics = Metrics.of(result)
    np.testing.assert_array_equal(metrics.cmc, [0.0, 1.0])
    assert (metrics.mAP, metrics.mINP) == (0.5, 0.5)
    assert metrics.row() == {"rank1": 0.0, "mAP": 50.0, "mINP": 50.0}


def test_chance_level_is_the_mean_of_seeded_random_rankings():
    query = [ImageRecord(f"q{i}", pid, 3, "infrared") for i, pid in enumerate([1, 2, 2])]
    gallery = [
        ImageRecord(f"g{i}", pid, cam, "visible") for i, (pid, cam) in enumerate([(1, 1), (2, 2), (1, 2), (3, 4)])
    ]
    split = TestSplit("infrared_to_visible", 0, query, gallery)
    rng = np.random.default_rng(CHANCE_SEED)
    draws = [
        Metrics.of(evaluate(rng.random((3, 4)), [1, 2, 2], [1, 2, 1, 3], [3, 3, 3], [1, 2, 2, 4], "sysu"))
        for _ in range(10)
    ]
    chance = chance_level(split, "sysu")
    expected = mean_over_trials(draws)
    np.testing.assert_array_equal(chance.cmc, expected.cmc)
    assert (chance.mAP, chance.mINP) == (expected.mAP, expected.mINP)


def test_direction_result_json_is_the_results_json_structure():
    result = _result()
    np.testing.assert_array_equal(result.mean.cmc, [0.75] * 20)
    payload = results_json({"infrared_to_visible": result})
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    direction = payload["infrared_to_visible"]
    assert list(direction) == ["trials", "mean", "chance", "num_trials", "scored"]
    assert direction["num_trials"] == 2 and direction["scored"] == result.scored
    assert direction["trials"][1] == {
        "rank1": 100.0,
        "rank5": 100.0,
        "rank10": 100.0,
        "rank20": 100.0,
        "mAP": 75.0,
        "mINP": 25.0,
    }
    assert direction["mean"]["mAP"] == 50.0 and direction["mean"]["rank1"] == 75.0
    assert direction["chance"]["rank20"] == pytest.approx(10.0)


def test_table_has_a_row_per_trial_the_mean_and_the_chance_level():
    lines = format_table({"infrared_to_visible": _result()}).splitlines()
    assert lines[0].split() == ["direction", "trial", "rank1", "rank5", "rank10", "rank20", "mAP", "mINP"]
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2] == ("infrared_to_visible: queries: 2 infrared; gallery: 3 visible (each query ranks the gallery)")
    assert [line.split()[1] for line in lines[3:]] == ["0", "1", "mean", "chance"]
    assert lines[5].split()[2:] == ["75.00", "75.00", "75.00", "75.00", "50.00", "37.50"]
