"""Each of the training loop's hooks on its own, with stand-ins for what it acts on."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lba_tf.evaluation.ranked_lists import RankedList, RankedLists, draw_ranked_lists
from lba_tf.evaluation.results import DirectionResult, Metrics
from lba_tf.evaluation.runner import EvaluationResults
from lba_tf.run_dir import RunDir
from lba_tf.training.hooks import (
    Checkpoints,
    Decisions,
    Evaluation,
    Figures,
    LastWeights,
    NonFiniteStop,
    Progress,
    Summaries,
    TrainingDiverged,
    best_score,
)


def _result(rank1, mAP):
    """A direction's result of one trial with the given rank-1 and mAP (percent)."""
    trial = Metrics(np.array([rank1 / 100] + [1.0] * 19), mAP / 100, 0.1)
    return DirectionResult("infrared_to_visible", [trial], chance=trial)


def _results(**results):
    """What ``evaluate_model`` returns, without ranked lists."""
    return EvaluationResults(results)


def _scalars(logdir):
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0}).Reload()
    return {
        tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }


def test_non_finite_total_stops_naming_step_epoch_and_the_checkpoint_before_the_bad_update():
    asked = []
    checkpoints = {6: "ckpt-6", 8: "ckpt-8", 9: "ckpt-9"}

    def last_checkpoint(step):
        asked.append(step)
        return checkpoints[max(s for s in checkpoints if s <= step)]

    hook = NonFiniteStop(steps_per_epoch=4, last_checkpoint=last_checkpoint)
    hook.after_step(9, {"total": 1.5})
    # step 10's loss is on the weights of step 9: ckpt-9 holds the update that broke them
    with pytest.raises(
        TrainingDiverged,
        match=r"^non-finite loss at step 10 \(epoch 3\): total=nan, id=1.0; "
        r"last good checkpoint: ckpt-8 \(resume from it with a lower train.lr or more warm-up\)$",
    ):
        hook.after_step(10, {"total": math.nan, "id": 1.0})
    assert asked == [8]
    with pytest.raises(TrainingDiverged, match="last good checkpoint: none$"):
        NonFiniteStop(4, lambda step: None).after_step(1, {"total": math.inf})


def test_summaries_write_every_log_and_the_rate_of_the_step_taken(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    hook = Summaries(writer, learning_rate=lambda step: 0.1 if step < 2 else 0.01)
    for step in (1, 2, 3):
        hook.after_step(step, {"total": float(step), "accuracy": 0.5})
    writer.flush()
    scalars = _scalars(tmp_path)
    assert [v for _, v in scalars["train/total"]] == [1.0, 2.0, 3.0]
    # step 2 is the second step taken (0-based index 1): still the first rate
    assert scalars["train/lr"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.1)), (3, pytest.approx(0.01))]
    assert "train/accuracy" in scalars


def test_progress_bar_counts_steps_within_the_epoch(caplog):
    hook = Progress(steps_per_epoch=3, epochs=2, learning_rate=lambda step: 0.1, verbose=False)
    with caplog.at_level("INFO", logger="lba_tf"):
        hook.before_epoch(1, 3)
    assert "epoch 2/2 (lr 0.10000)" in caplog.text
    hook.after_step(4, {"total": 1.0})
    assert hook._bar._seen_so_far == 1


def test_checkpoints_every_n_steps_at_epoch_ends_and_at_the_stop_never_twice():
    calls = []
    hook = Checkpoints(lambda step: calls.append(("saved", step)), every=3, steps_per_epoch=2, stop=7)
    for step in range(1, 8):
        hook.after_step(step, {})
        calls.append(("stepped", step))
        if step % 2 == 0:
            hook.after_epoch(step // 2 - 1, step)
            calls.append(("epoch ended", step))
    hook.after_train(7)
    hook.after_train(7)
    saved = [step for what, step in calls if what == "saved"]
    assert saved == [2, 3, 4, 6, 7]
    # step 6 is periodic and an epoch's end: saved after the epoch's duties (by after_epoch), so a
    # kill never leaves a checkpoint whose epoch was not evaluated; likewise the stop at 7
    assert calls.index(("saved", 6)) > calls.index(("stepped", 6))
    assert ("saved", 6) == calls[calls.index(("epoch ended", 6)) - 1]
    assert calls[-1] == ("saved", 7) and calls[-2] == ("stepped", 7)


def test_a_resumed_run_does_not_save_again_at_its_start():
    saved = []
    Checkpoints(saved.append, every=5, steps_per_epoch=5, start=10).after_train(10)
    assert saved == []


def test_figures_and_last_weights_follow_the_epochs():
    drawn, weights = [], []
    figures, last = Figures(drawn.append), LastWeights(weights.append)
    for epoch, step in ((0, 2), (1, 4)):
        figures.after_epoch(epoch, step)
        last.after_epoch(epoch, step)
    last.after_train(5)
    assert drawn == [2, 4] and weights == ["last", "last", "last"]


def test_best_score_is_rank1_then_map_of_the_first_direction():
    results = {"infrared_to_visible": _result(40.0, 30.0), "visible_to_infrared": _result(90.0, 90.0)}
    assert best_score(results) == pytest.approx(40.0 + 0.03)
    assert best_score({"a": _result(40.0, 31.0)}) > best_score({"a": _result(40.0, 30.0)})


def test_evaluation_runs_on_its_epochs_keeps_the_best_on_test_and_evaluates_at_the_stop(tmp_path):
    run = RunDir(tmp_path / "run")
    scores = iter([10.0, 30.0, 20.0, 25.0])
    evaluations, saved = [], []

    def evaluate():
        evaluations.append(len(evaluations))
        return _results(infrared_to_visible=_result(next(scores), 0.0))

    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    hook = Evaluation(evaluate, every=2, epochs=5, writer=writer, run=run, save_weights=saved.append)
    for epoch in range(5):  # evaluated after epochs 2, 4 and the last, 5
        hook.after_epoch(epoch, 2 * (epoch + 1))
    assert len(evaluations) == 3
    assert saved == ["best", "best"]  # 10 then 30; 20 is not better
    assert run.read_best() == {"score": 30.0, "step": 8, "chosen_on": "the test set"}
    hook.after_train(10)  # just evaluated at step 10: not again
    assert len(evaluations) == 3
    hook.after_train(11)  # stopped elsewhere: the final weights are evaluated
    assert len(evaluations) == 4 and hook.results["infrared_to_visible"].mean.cmc[0] == 0.25
    writer.flush()
    assert [step for step, _ in _scalars(tmp_path / "tb")["eval/infrared_to_visible/rank1"]] == [4, 8, 10, 11]


def _resumed_decisions(best: float, evaluated_at: int) -> Decisions:
    decisions = Decisions()
    decisions.best_score.assign(best)
    decisions.evaluated_at.assign(evaluated_at)
    return decisions


def _resumed_evaluation(run, saved, rank1, decisions):
    """An evaluation every epoch of 3 that scores ``rank1``, resumed with ``decisions``."""
    return Evaluation(
        lambda: _results(d=_result(rank1, 0.0)),
        every=1,
        epochs=3,
        writer=tf.summary.create_noop_writer(),
        run=run,
        save_weights=saved.append,
        decisions=decisions,
    )


def test_a_resumed_evaluation_knows_the_best_so_far_from_the_checkpointed_decisions(tmp_path):
    run, saved = RunDir(tmp_path / "run"), []
    hook = _resumed_evaluation(run, saved, 40.0, _resumed_decisions(50.0, 6))
    hook.after_epoch(3, 8)
    assert saved == [] and run.read_best() is None
    assert hook.evaluated_at == 8


def test_an_evaluation_after_the_restored_checkpoint_is_decided_again(tmp_path):
    # killed after the evaluation at step 8 wrote best.json, before checkpoint 8: the run resumes
    # from step 6, whose decisions say best 20, and must choose step 8 again
    run = RunDir(tmp_path / "run")
    run.write_best(40.0, 8)
    saved = []
    hook = _resumed_evaluation(run, saved, 40.0, _resumed_decisions(20.0, 4))
    hook.after_epoch(3, 8)
    assert saved == ["best"] and run.read_best()["step"] == 8
    assert hook.best == 40.0


def test_resumed_at_the_stop_the_table_is_recomputed_without_new_summaries(tmp_path):
    run = RunDir(tmp_path / "run")
    calls = []
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    hook = Evaluation(
        lambda: calls.append(1) or _results(infrared_to_visible=_result(40.0, 0.0)),
        every=1,
        epochs=3,
        writer=writer,
        run=run,
        save_weights=lambda name: None,
        decisions=_resumed_decisions(40.0, 6),
    )
    hook.after_train(6)
    writer.flush()
    assert calls == [1] and hook.results["infrared_to_visible"].mean.cmc[0] == 0.4
    assert "eval/infrared_to_visible/rank1" not in _scalars(tmp_path / "tb")


def test_without_any_evaluation_the_stop_still_leaves_best_weights(tmp_path):
    run = RunDir(tmp_path / "run")
    saved = []
    hook = Evaluation(
        lambda: _results(d=_result(1.0, 0.0)),
        every=10,
        epochs=10,
        writer=tf.summary.create_noop_writer(),
        run=run,
        save_weights=saved.append,
    )
    hook.after_train(3)
    assert saved == ["best"]


def _image_sizes(logdir, tag):
    """``[(step, (height, width))]`` of the image summaries ``tag`` under ``logdir``."""
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0}).Reload()
    sizes = []
    for event in events.Tensors(tag):
        width, height = tf.make_ndarray(event.tensor_proto)[:2]  # then the PNG
        sizes.append((event.step, (int(height), int(width))))
    return sizes


def _ranked():
    row = RankedList(
        query=np.full((8, 4, 3), 200, np.uint8),
        gallery=[np.full((8, 4, 3), 90, np.uint8)] * 2,
        scores=[0.9, 0.8],
        query_pid=1,
        gallery_pids=[1, 2],
        first_right=1,
    )
    return RankedLists([row])


def test_each_evaluation_draws_its_ranked_lists_as_png_and_in_tensorboard(tmp_path):
    run = RunDir(tmp_path / "run")
    ranked = _ranked()
    results = EvaluationResults({"infrared_to_visible": _result(40.0, 0.0)}, {"infrared_to_visible": ranked})
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    hook = Evaluation(lambda: results, every=1, epochs=3, writer=writer, run=run, save_weights=lambda name: None)
    hook.after_epoch(0, 4)
    hook.after_train(6)
    writer.flush()
    pictures = sorted(p.name for p in (run.path / "pictures").iterdir())
    assert pictures == ["ranked_infrared_to_visible_step4.png", "ranked_infrared_to_visible_step6.png"]
    want = draw_ranked_lists(ranked, title="infrared_to_visible, step 4")
    with Image.open(run.ranked_picture_path("infrared_to_visible", 4)) as image:
        np.testing.assert_array_equal(np.asarray(image), want)
    assert _image_sizes(tmp_path / "tb", "ranked/infrared_to_visible") == [(4, want.shape[:2]), (6, want.shape[:2])]


def test_only_the_chief_draws(tmp_path):
    run = RunDir(tmp_path / "run")
    results = EvaluationResults({"d": _result(40.0, 0.0)}, {"d": _ranked()})
    hook = Evaluation(
        lambda: results,
        every=1,
        epochs=3,
        writer=tf.summary.create_noop_writer(),
        run=run,
        save_weights=lambda name: None,
        chief=False,
    )
    hook.after_epoch(0, 4)
    assert not (run.path / "pictures").exists()
