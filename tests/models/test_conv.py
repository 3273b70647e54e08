"""The convolution layer's own input gradient: same values as TensorFlow's, on the fast path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lba_tf.models.conv import Conv2D, conv2d_valid_stride1, fast_gradient_applies, input_gradient
from lba_tf.runtime import onednn_enabled
from tests.models.harness import run_config_round_trip_test


def _gradients(conv, x, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        loss = tf.reduce_sum(conv(x, kernel) * upstream)
    return tape.gradient(loss, [x, kernel])


@pytest.mark.parametrize("kernel_size", [(1, 1), (3, 3), (7, 7), (1, 3)])
def test_gradients_equal_tensorflows_in_float64(kernel_size):
    rng = np.random.default_rng(sum(kernel_size))
    kh, kw = kernel_size
    x = tf.constant(rng.normal(size=(2, 9, 8, 3)))
    kernel = tf.constant(rng.normal(size=(kh, kw, 3, 5)))
    upstream = tf.constant(rng.normal(size=(2, 10 - kh, 9 - kw, 5)))
    ours = _gradients(conv2d_valid_stride1, x, kernel, upstream)
    theirs = _gradients(lambda a, b: tf.nn.conv2d(a, b, 1, "VALID"), x, kernel, upstream)
    np.testing.assert_allclose(conv2d_valid_stride1(x, kernel), tf.nn.conv2d(x, kernel, 1, "VALID"))
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_input_gradient_by_hand():
    # one 2x2 kernel over a 3x3 input: each input pixel collects the kernel taps that saw it
    x = tf.zeros([1, 3, 3, 1])
    kernel = tf.reshape(tf.constant([1.0, 2.0, 3.0, 4.0]), [2, 2, 1, 1])
    upstream = tf.ones([1, 2, 2, 1])
    grad_x, grad_kernel = _gradients(conv2d_valid_stride1, x, kernel, upstream)
    np.testing.assert_array_equal(grad_x[0, :, :, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    np.testing.assert_array_equal(grad_kernel, tf.zeros([2, 2, 1, 1]))


def _gradient_op_types(layer, x):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, x)

    graph = step.get_concrete_function(x).graph
    return {op.type for op in graph.get_operations()}


def test_layer_uses_its_gradient_for_stride_one_on_cpu_and_tensorflows_otherwise():
    x = tf.random.stateless_normal([2, 8, 6, 4], seed=[0, 1])
    fast = Conv2D(6, 1, use_bias=False)
    fast.build(x.shape)
    strided = Conv2D(6, 1, strides=2, use_bias=False)
    strided.build(x.shape)
    with input_gradient("fast"):
        assert "Conv2DBackpropInput" not in _gradient_op_types(fast, x)
        assert "Conv2DBackpropInput" in _gradient_op_types(strided, x)
    with input_gradient("native"):
        assert "Conv2DBackpropInput" in _gradient_op_types(fast, x)


def test_default_is_tensorflows_gradient_exactly_where_onednn_runs():
    # measured per kernel path (benchmarks/results.md): ours is faster on Eigen, TensorFlow's on oneDNN
    x = tf.random.stateless_normal([2, 8, 6, 4], seed=[0, 1])
    layer = Conv2D(6, 3, use_bias=False)
    layer.build(x.shape)
    assert fast_gradient_applies() == (not onednn_enabled())
    assert ("Conv2DBackpropInput" in _gradient_op_types(layer, x)) == onednn_enabled()
    with input_gradient("fast"):
        assert fast_gradient_applies()


def test_an_unknown_gradient_is_refused():
    with pytest.raises(ValueError, match="input gradient must be one of"):
        with input_gradient("matmul"):
            pass


def test_layer_matches_keras_conv2d_in_float32():
    x = tf.random.stateless_normal([4, 12, 7, 16], seed=[2, 3])
    ours = Conv2D(8, 3, use_bias=False)
    keras_conv = keras.layers.Conv2D(8, 3, use_bias=False)
    ours.build(x.shape)
    keras_conv.build(x.shape)
    keras_conv.kernel.assign(ours.kernel)
    results = []
    for layer in (ours, keras_conv):
        with input_gradient("fast"), tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        results.append(tape.gradient(loss, [x, layer.kernel]))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(want))))


def test_config_round_trip():
    clone = run_config_round_trip_test(Conv2D(8, 3, strides=2, padding="same", use_bias=False))
    assert isinstance(clone, Conv2D)
    assert (clone.filters, clone.strides, clone.padding, clone.use_bias) == (8, (2, 2), "same", False)
