"""Heads: GeM pooling by hand, BNNeck's frozen zero shift and init, bias-free classifier."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lba_tf.models.heads import BNNeck, GeMPooling, IdentityClassifier
from tests.models.harness import run_config_round_trip_test


def test_gem_hand_computed():
    # Channel 0 holds 1, 2, 3, 4: (mean of cubes = (1 + 8 + 27 + 64) / 4 = 25) ** (1/3).
    # Channel 1 is all 2: (8) ** (1/3) = 2. Channel 2 is all 0: (eps) ** (1/3) = 1e-4.
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[0, :, :, 0] = [[1, 2], [3, 4]]
    x[0, :, :, 1] = 2
    out = GeMPooling()(x).numpy()
    np.testing.assert_allclose(out, [[25 ** (1 / 3), 2.0, 1e-4]], rtol=1e-6)


def test_gem_with_p_one_is_average_pooling():
    x = np.random.default_rng(0).uniform(0, 3, (2, 5, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(GeMPooling(p=1.0, eps=0.0)(x), x.mean(axis=(1, 2)), rtol=1e-6)


def test_gem_has_no_weights_and_round_trips_config():
    gem = GeMPooling(p=4.0, eps=1e-6)
    gem(np.ones((1, 2, 2, 3), np.float32))
    assert gem.weights == []
    assert run_config_round_trip_test(gem).p == 4.0


def test_bnneck_shift_is_frozen_zero_and_scale_is_near_one():
    keras.utils.set_random_seed(0)
    neck = BNNeck()
    neck.build((None, 2048))
    gamma, beta = neck.batch_norm.gamma, neck.batch_norm.beta
    assert not beta.trainable and beta.path in [v.path for v in neck.weights]
    np.testing.assert_array_equal(beta.numpy(), 0.0)
    assert [v.path for v in neck.trainable_weights] == [gamma.path]
    # N(1, 0.01) over 2048 draws: the sample mean is within 5 standard errors (5 * 0.01 / 45).
    assert abs(gamma.numpy().mean() - 1.0) < 1.2e-3
    assert 0.009 < gamma.numpy().std() < 0.011


def test_bnneck_normalises_with_batch_statistics_in_training():
    x = np.random.default_rng(1).normal(2.0, 3.0, (8, 5)).astype(np.float32)
    neck = BNNeck()
    out = neck(x, training=True).numpy()
    gamma = neck.batch_norm.gamma.numpy()
    expected = gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # After one step from (0, 1): 0.9 * 0 + 0.1 * batch mean and, as torch, 0.9 * 1 + 0.1 * the
    # unbiased batch variance.
    np.testing.assert_allclose(neck.batch_norm.moving_mean.numpy(), 0.1 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(neck.batch_norm.moving_variance.numpy(), 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-5)


def test_bnneck_shift_gets_no_gradient_update():
    neck = BNNeck()
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    neck.build(x.shape)
    optimizer = keras.optimizers.SGD(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(neck(x, training=True) * np.arange(3, dtype=np.float32))
    optimizer.apply_gradients(zip(tape.gradient(loss, neck.trainable_variables), neck.trainable_variables))
    np.testing.assert_array_equal(neck.batch_norm.beta.numpy(), 0.0)


def test_bnneck_config_round_trip():
    neck = BNNeck(gamma_stddev=0.02, epsilon=1e-3, momentum=0.5)
    clone = run_config_round_trip_test(neck)
    assert clone.batch_norm.epsilon == 1e-3 and clone.batch_norm.momentum == 0.5


def test_classifier_is_a_bias_free_linear_map():
    keras.utils.set_random_seed(0)
    classifier = IdentityClassifier(300)
    x = np.random.default_rng(3).normal(size=(4, 2048)).astype(np.float32)
    logits = classifier(x).numpy()
    assert [v.name for v in classifier.weights] == ["kernel"]
    kernel = classifier.kernel.numpy()
    assert kernel.shape == (2048, 300)
    np.testing.assert_allclose(logits, x @ kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(classifier(np.zeros((1, 2048), np.float32)), 0.0)
    # N(0, 0.001) over 614,400 draws.
    assert abs(kernel.mean()) < 1e-5
    assert kernel.std() == pytest.approx(1e-3, rel=0.01)
    assert run_config_round_trip_test(classifier).num_classes == 300
