"""TorchSGD: the update of torch.optim.SGD (coupled L2, Nesterov, per-group rates)."""

import keras
import numpy as np
import pytest

from lba_tf.training.optimizer import TorchSGD


def _run(opt, init, grads_fn, steps):
    var = keras.Variable(np.array(init, np.float32), name="w")
    values = []
    for t in range(steps):
        opt.apply_gradients([(keras.ops.convert_to_tensor(grads_fn(t, var.numpy())), var)])
        values.append(var.numpy().copy())
    return np.array(values)


def test_hand_computed_sequence_nesterov_with_weight_decay():
    # p0 = 1, constant gradient 0.5, lr 0.1, momentum 0.9, wd 0.1, Nesterov.
    # step 1: g = 0.5 + 0.1*1 = 0.6; b = 0.6; g' = 0.6 + 0.9*0.6 = 1.14; p = 1 - 0.114 = 0.886
    # step 2: g = 0.5 + 0.0886 = 0.5886; b = 0.54 + 0.5886 = 1.1286;
    #         g' = 0.5886 + 1.01574 = 1.60434; p = 0.886 - 0.160434 = 0.725566
    opt = TorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    out = _run(opt, [1.0], lambda t, p: np.float32([0.5]), 2)
    np.testing.assert_allclose(out[:, 0], [0.886, 0.725566], rtol=1e-6)


def test_hand_computed_plain_momentum_with_changing_rate():
    # Rate 1 then 0.5 (a schedule), momentum 0.5, no decay, gradient 1:
    # step 1: b = 1, p = 0 - 1*1 = -1; step 2: b = 0.5 + 1 = 1.5, p = -1 - 0.5*1.5 = -1.75
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.5])
    opt = TorchSGD(schedule, momentum=0.5)
    out = _run(opt, [0.0], lambda t, p: np.float32([1.0]), 2)
    np.testing.assert_allclose(out[:, 0], [-1.0, -1.75], rtol=1e-6)


def test_lr_scales_pick_the_first_matching_pattern():
    opt = TorchSGD(1.0, lr_scales={"(^|/)classifier/": 1.0, ".": 0.1})
    clf = keras.layers.Dense(1, use_bias=False, name="classifier")
    other = keras.layers.Dense(1, use_bias=False, name="body")
    for layer in (clf, other):
        layer.build((None, 1))
        layer.kernel.assign([[1.0]])
    assert opt.lr_scale_of(clf.kernel) == 1.0 and opt.lr_scale_of(other.kernel) == 0.1
    assert TorchSGD(1.0).lr_scale_of(other.kernel) == 1.0
    # gradient 1 at rate 1: the classifier moves 1.0, the other layer 0.1
    opt.apply_gradients([(np.float32([[1.0]]), clf.kernel), (np.float32([[1.0]]), other.kernel)])
    assert clf.kernel.numpy().item() == pytest.approx(0.0)
    assert other.kernel.numpy().item() == pytest.approx(0.9)


def test_matches_torch_sgd_over_a_schedule():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    init = rng.normal(size=(3, 4)).astype(np.float32)
    grads = rng.normal(size=(12, 3, 4)).astype(np.float32)
    rates = [0.01 * (1 + t // 3) for t in range(12)]  # changes every 3 steps, like epochs

    p = torch.nn.Parameter(torch.tensor(init))
    topt = torch.optim.SGD([p], lr=rates[0], momentum=0.9, nesterov=True, weight_decay=5e-4)
    expected = []
    for t in range(12):
        for group in topt.param_groups:
            group["lr"] = rates[t]
        p.grad = torch.tensor(grads[t])
        topt.step()
        expected.append(p.detach().numpy().copy())

    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2, 5, 8], [0.01, 0.02, 0.03, 0.04])
    opt = TorchSGD(schedule, momentum=0.9, nesterov=True, weight_decay=5e-4)
    ours = _run(opt, init, lambda t, _: grads[t], 12)
    np.testing.assert_allclose(ours, np.array(expected), rtol=1e-5, atol=1e-7)


def test_config_round_trip():
    opt = TorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, lr_scales={"a": 1.0, ".": 0.1})
    again = TorchSGD.from_config(opt.get_config())
    assert (again.momentum, again.nesterov, again.l2, again.lr_scales) == (0.9, True, 5e-4, {"a": 1.0, ".": 0.1})


def test_rejects_nesterov_without_momentum():
    with pytest.raises(ValueError, match="Nesterov"):
        TorchSGD(0.1, nesterov=True)
