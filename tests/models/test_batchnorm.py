"""TorchBatchNormalization: training outputs and running statistics equal torch's BatchNorm; config."""

import numpy as np
import pytest

from lba_tf.models.batchnorm import TorchBatchNormalization
from tests.models.harness import run_config_round_trip_test


def test_unbiased_running_variance_by_hand():
    # one channel, values 1 and 3: batch mean 2, biased var 1, unbiased var 2.
    bn = TorchBatchNormalization(momentum=0.5)
    x = np.array([[1.0], [3.0]], np.float32)
    y = bn(x, training=True).numpy()
    np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)], rtol=1e-6)
    # moving mean 0.5*0 + 0.5*2 = 1; moving var 0.5*1 + 0.5*2 = 1.5
    np.testing.assert_allclose(bn.moving_mean.numpy(), [1.0])
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.5])


def test_inference_uses_moving_statistics():
    bn = TorchBatchNormalization()
    bn.build((None, 2))
    bn.moving_mean.assign([1.0, -1.0])
    bn.moving_variance.assign([4.0, 0.25])
    y = bn(np.array([[3.0, 0.0]], np.float32), training=False).numpy()
    np.testing.assert_allclose(y, [[2 / np.sqrt(4 + 1e-5), 1 / np.sqrt(0.25 + 1e-5)]], rtol=1e-6)


def test_matches_torch_batchnorm2d_over_several_training_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    tbn = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(rng.normal(1, 0.1, 5), dtype=torch.float32))
        tbn.bias.copy_(torch.tensor(rng.normal(0, 0.1, 5), dtype=torch.float32))
    bn = TorchBatchNormalization()
    bn.build((None, 3, 4, 5))
    bn.gamma.assign(tbn.weight.detach().numpy())
    bn.beta.assign(tbn.bias.detach().numpy())
    tbn.train()
    for _ in range(4):
        x = rng.normal(2.0, 3.0, size=(6, 5, 3, 4)).astype(np.float32)
        expected = tbn(torch.tensor(x)).detach().numpy().transpose(0, 2, 3, 1)
        got = bn(x.transpose(0, 2, 3, 1), training=True).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), tbn.running_var.numpy(), rtol=1e-5)
    tbn.eval()
    x = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        bn(x.transpose(0, 2, 3, 1), training=False).numpy(),
        tbn(torch.tensor(x)).detach().numpy().transpose(0, 2, 3, 1),
        rtol=1e-4,
        atol=1e-5,
    )


def test_config_round_trip():
    bn = TorchBatchNormalization(momentum=0.5, epsilon=1e-3)
    clone = run_config_round_trip_test(bn)
    assert (clone.momentum, clone.epsilon) == (0.5, 1e-3)
