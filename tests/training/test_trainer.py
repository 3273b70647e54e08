"""The training program: run directory contents, TensorBoard, resume, divergence, replicas."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import load_config
from tests.tiny import TINY_OVERRIDES, set_args

TINY = TINY_OVERRIDES
REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(*extra):
    return load_config(None, [*TINY, *extra])


def _weights(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
    return out


def _assert_same_weights(a, b, rtol=0.0):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 20
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=rtol, atol=0, err_msg=key)


# Two runs in one process that has run other tests before can differ in the last bit (the likely
# cause: vectorised reductions start their SIMD lanes where a buffer's alignment allows, so the
# order of a sum can follow the allocator's history). Measured: one BatchNorm statistic 1 ulp
# apart (1.2e-7 on 0.9992) after a full-suite run, none in a fresh process. 4 ulps; a step
# missed or repeated moves weights by more than 1e-3. Separate processes (the SIGKILL test
# below) resume to identical weights.
SAME_PROCESS_RTOL = 4 * 2.0**-23


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):
    from lba_tf.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("run")
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default
    trainer = Trainer(_config(), run_dir, cache_dir=cache_dir)
    assert not tf.config.experimental.tensor_float_32_execution_enabled()  # train.tf32: false
    payload = trainer.fit()
    return run_dir, payload


def test_run_directory_holds_everything_promised(finished_run):
    run_dir, payload = finished_run
    for name in (
        "results.json",
        "run.json",
        "weights/best.weights.h5",
        "weights/last.weights.h5",
        "checkpoints/checkpoint",
    ):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(payload))
    assert results["step"] == 4
    table = results["results"]["infrared_to_visible"]
    assert table["num_trials"] == 2 and len(table["trials"]) == 2
    for row in (table["mean"], table["chance"]):
        assert set(row) == {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
        assert 0 <= row["rank1"] <= row["rank5"] <= row["rank10"] <= row["rank20"] <= 100
    assert json.loads((run_dir / "run.json").read_text())["num_classes"] == 8


def test_tensorboard_has_every_loss_the_rate_evaluation_and_pictures(finished_run):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = finished_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["tensors"])
    for name in ("id", "triplet", "ic3", "ic4", "dt3", "dt4", "total", "accuracy", "lr"):
        assert f"train/{name}" in tags, name
    for name in ("rank1", "mAP", "mINP"):
        assert f"eval/infrared_to_visible/{name}" in tags
    assert "correspondence/rgb_ir_warped" in tags
    # the ranked lists of the evaluations at steps 2 and 4 (every epoch of 2 steps)
    assert [e.step for e in events.Tensors("ranked/infrared_to_visible")] == [2, 4]
    assert sorted(p.name for p in (run_dir / "pictures").iterdir()) == [
        "ranked_infrared_to_visible_step2.png",
        "ranked_infrared_to_visible_step4.png",
    ]
    lrs = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("train/lr")]
    # warm-up of one epoch to 0.1, then the milestone at epoch 1 divides by 10
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_stopping_and_resuming_gives_the_same_weights(finished_run, tmp_path, cache_dir):
    from lba_tf.training.trainer import Trainer

    run_dir, _ = finished_run
    Trainer(_config(), tmp_path, cache_dir=cache_dir).fit(max_steps=3)
    resumed = Trainer(_config(), tmp_path, cache_dir=cache_dir)
    assert resumed.restore() == 3
    resumed.fit()
    _assert_same_weights(
        run_dir / "weights/last.weights.h5", tmp_path / "weights/last.weights.h5", rtol=SAME_PROCESS_RTOL
    )


def test_non_finite_loss_stops_naming_the_step_and_the_checkpoint_it_can_resume_from(tmp_path, cache_dir):
    from lba_tf.training.trainer import Trainer, TrainingDiverged

    Trainer(_config(), tmp_path, cache_dir=cache_dir).fit(max_steps=2)
    # the same run's state with a learning rate that blows up: the next step's loss is not finite
    trainer = Trainer(_config("train.lr=1.0e30", "train.warmup_epochs=0"), tmp_path, cache_dir=cache_dir)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    message = str(err.value)
    # step 3 took the huge step (its own loss, on step 2's weights, was finite); step 4's is not
    assert message.startswith("non-finite loss at step 4 (epoch 2): "), message
    checkpoint = message.rsplit("last good checkpoint: ", 1)[1].split(" (")[0]
    assert checkpoint == str(tmp_path / "checkpoints" / "ckpt-2")
    reader = tf.train.load_checkpoint(checkpoint)
    (iterations,) = [n for n in reader.get_variable_to_shape_map() if n.startswith("optimizer/") and "iteration" in n]
    assert reader.get_tensor(iterations) == 2
    weights = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/")]
    assert len(weights) > 20 and all(np.isfinite(reader.get_tensor(name)).all() for name in weights)


def _all_events(logdir):
    """Every summary of a run as {(tag, step): value}: scalars as floats, pictures as PNG bytes."""
    from lba_tf.training.events import event_files

    out = {}
    for path in event_files(logdir):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                key = (value.tag, event.step)
                assert key not in out, f"{key} written twice"
                array = tf.make_ndarray(value.tensor)
                out[key] = array.tobytes() if array.dtype == object else float(array)
    return out


class _Killed(BaseException):
    """Stands in for SIGKILL: raised through the loop, caught by nobody but the test."""


def _kill_at(monkeypatch, trainer, step, *, after_saving):
    """Kill ``trainer`` when it checkpoints ``step``: just before the save or just after it. Its
    summary writer is flushed first, the worst case for duplicates (a real kill may lose some)."""
    save = trainer._save

    def killing_save():
        if trainer.global_step == step and not after_saving:
            trainer.writer.close()
            raise _Killed
        path = save()
        if trainer.global_step == step:
            trainer.writer.close()
            raise _Killed
        return path

    monkeypatch.setattr(trainer, "_save", killing_save)


@pytest.mark.parametrize(
    "step, after_saving",
    [(2, False), (4, True)],
    ids=["after the epoch's evaluation, before its checkpoint", "after the last checkpoint, before results.json"],
)
def test_a_run_killed_and_resumed_makes_every_decision_the_uninterrupted_run_made(
    finished_run, tmp_path, cache_dir, monkeypatch, step, after_saving
):
    from lba_tf.training.trainer import Trainer

    run_dir, payload = finished_run
    killed = Trainer(_config(), tmp_path, cache_dir=cache_dir)
    _kill_at(monkeypatch, killed, step, after_saving=after_saving)
    with pytest.raises(_Killed):
        killed.fit()
    assert (tmp_path / "best.json").exists() and not (tmp_path / "results.json").exists()
    resumed = Trainer(_config(), tmp_path, cache_dir=cache_dir)
    assert resumed.restore() == (step if after_saving else step - 1)
    resumed.fit()

    assert json.loads((tmp_path / "best.json").read_text()) == json.loads((run_dir / "best.json").read_text())
    _assert_same_weights(run_dir / "weights/best.weights.h5", tmp_path / "weights/best.weights.h5", SAME_PROCESS_RTOL)
    _assert_same_weights(run_dir / "weights/last.weights.h5", tmp_path / "weights/last.weights.h5", SAME_PROCESS_RTOL)
    expected, got = _all_events(run_dir / "tensorboard"), _all_events(tmp_path / "tensorboard")
    assert sorted(got) == sorted(expected)  # the same summaries at the same steps, each once
    assert sorted(step for tag, step in got if tag == "eval/infrared_to_visible/rank1") == [2, 4]
    for key, value in expected.items():
        if isinstance(value, float):  # losses of the same weights, to the in-process rounding above
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["step"] == payload["step"] and results["results"] == payload["results"]


def _train_cmd(run_dir, cache_dir, *extra):
    return [
        sys.executable,
        "-m",
        "lba_tf.train",
        "--run-dir",
        str(run_dir),
        "--cache-dir",
        cache_dir,
        *set_args([*TINY, *extra]),
    ]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_to_the_same_weights(finished_run, tmp_path, cache_dir):
    run_dir, _ = finished_run
    cmd = _train_cmd(tmp_path, cache_dir)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "checkpoints" / "ckpt-1.index").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-epoch: epoch 0 has two steps
    proc.wait()
    assert not (tmp_path / "results.json").exists()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=600)
    _assert_same_weights(run_dir / "weights/last.weights.h5", tmp_path / "weights/last.weights.h5")
    _assert_same_weights(run_dir / "weights/best.weights.h5", tmp_path / "weights/best.weights.h5")
    assert (tmp_path / "best.json").read_text() == (run_dir / "best.json").read_text()
    got, expected = _all_events(tmp_path / "tensorboard"), _all_events(run_dir / "tensorboard")
    assert sorted(got) == sorted(expected)  # every summary once; the reference ran in this process
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


_REPLICA_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
if sys.argv[2] == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lba_tf.config import load_config
from tests.tiny import TINY_OVERRIDES, set_args
from lba_tf.training.trainer import Trainer
cfg = load_config(None, json.loads(sys.argv[3]))
trainer = Trainer(cfg, sys.argv[1], cache_dir=sys.argv[4])
assert trainer.strategy.num_replicas_in_sync == 2, trainer.strategy.num_replicas_in_sync
trainer.fit(max_steps=2)
np.savez(sys.argv[1] + f"/replica_weights_{sys.argv[5]}.npz",
         *[np.stack([t.numpy() for t in trainer.strategy.experimental_local_results(v.value)])
           for v in trainer.model.trainable_weights])
"""


# Trainable weights must agree on every replica and worker after the all-reduced updates.
# BatchNorm statistics are per replica, as without synchronised BatchNorm in torch.


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_keeps_replicas_identical(tmp_path, cache_dir):
    overrides = json.dumps([*TINY, "train.strategy=mirrored", "data.eval_trials=1"])
    subprocess.run(
        [sys.executable, "-c", _REPLICA_SCRIPT, str(tmp_path), "mirrored", overrides, cache_dir, "0"],
        cwd=REPO,
        check=True,
        timeout=900,
    )
    stacked = np.load(tmp_path / "replica_weights_0.npz")
    assert len(stacked.files) > 20
    for key in stacked.files:
        per_replica = stacked[key]
        assert per_replica.shape[0] == 2 and np.isfinite(per_replica).all()
        np.testing.assert_array_equal(per_replica[0], per_replica[1], err_msg=key)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_strategy_with_two_processes_trains_identical_weights(tmp_path, cache_dir):
    ports = [_free_port(), _free_port()]
    workers = [f"127.0.0.1:{p}" for p in ports]
    overrides = json.dumps([*TINY, "train.strategy=multi_worker", "data.eval_trials=1"])
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        run_dir = tmp_path / f"worker{index}"
        run_dir.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _REPLICA_SCRIPT, str(run_dir), "multi_worker", overrides, cache_dir, str(index)],
                cwd=REPO,
                env=env,
            )
        )
    for proc in procs:
        assert proc.wait(timeout=900) == 0
    a = np.load(tmp_path / "worker0" / "replica_weights_0.npz")
    b = np.load(tmp_path / "worker1" / "replica_weights_1.npz")
    assert a.files == b.files and len(a.files) > 20
    for key in a.files:
        assert np.isfinite(a[key]).all()
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
