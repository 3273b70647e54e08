"""Convolution layer whose input gradient runs at matrix-multiply speed on CPU.

TensorFlow's CPU kernel for the input gradient of a convolution (``Conv2DBackpropInput``) runs
at about half the rate of the forward convolution, for 1x1 kernels too, where it is a single
matrix product. On CPU, the stride-1 "valid" convolutions of :class:`Conv2D` compute that
gradient themselves: a ``tf.matmul`` for 1x1 kernels (the same products, same result) and, for
larger kernels, the forward convolution of the zero-padded output gradient with the flipped,
transposed kernel (the same sums in another order). The forward pass and the kernel gradient
are TensorFlow's own. On GPU, with strides or with "same" padding, the layer is
``keras.layers.Conv2D`` unchanged.

Which input gradient runs is chosen per machine by what was measured faster there
(``benchmarks/results.md``): this module's on CPUs running TensorFlow's Eigen kernels, where it
is x1.18 for the ResNet-50 training step; TensorFlow's own where oneDNN runs (the default on
AVX-512 CPUs), whose ``Conv2DBackpropInput`` is as fast as its forward convolution. Layers traced
inside :func:`input_gradient` use the one it names.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import keras
import tensorflow as tf

from lba_tf.runtime import onednn_enabled

INPUT_GRADIENTS = ("auto", "fast", "native")
"""``auto``: per machine, as above; ``fast``: this module's on CPU; ``native``: TensorFlow's."""

_choice = {"input_gradient": "auto"}

GRADIENT_SCOPE = "conv2d_valid_stride1_grad"
"""Name scope of the gradient ops of :func:`conv2d_valid_stride1` (profiles count them as backward)."""


def _input_gradient(grad: tf.Tensor, kernel: tf.Tensor, input_shape: tf.Tensor) -> tf.Tensor:
    """Gradient of ``conv2d(x, kernel, stride 1, "valid")`` with respect to ``x``.

    Args:
        grad: ``[N, H', W', C_out]`` gradient of the output.
        kernel: ``[kh, kw, C_in, C_out]``.
        input_shape: the shape of ``x``, ``[N, H' + kh - 1, W' + kw - 1, C_in]``.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    if kh == 1 and kw == 1:
        rows = tf.reshape(grad, [-1, kernel.shape[3]])
        return tf.reshape(tf.matmul(rows, kernel[0, 0], transpose_b=True), input_shape)
    # x[i] feeds y[i - a] through kernel[a]: a full correlation with the flipped kernel
    padded = tf.pad(grad, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
    flipped = tf.transpose(kernel[::-1, ::-1], [0, 1, 3, 2])
    return tf.nn.conv2d(padded, flipped, strides=1, padding="VALID")


@tf.custom_gradient
def conv2d_valid_stride1(inputs: tf.Tensor, kernel: tf.Tensor):
    """``tf.nn.conv2d(inputs, kernel, 1, "VALID")`` with the input gradient of this module.

    Args:
        inputs: ``[N, H, W, C_in]``.
        kernel: ``[kh, kw, C_in, C_out]`` (a tensor: read a variable before the call).

    Returns:
        ``[N, H - kh + 1, W - kw + 1, C_out]``.
    """
    outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID")

    def gradient(grad):
        with tf.name_scope(GRADIENT_SCOPE):
            grad_kernel = tf.raw_ops.Conv2DBackpropFilter(
                input=inputs, filter_sizes=tf.shape(kernel), out_backprop=grad, strides=[1, 1, 1, 1], padding="VALID"
            )
            return _input_gradient(grad, kernel, tf.shape(inputs)), grad_kernel

    return outputs, gradient


@contextlib.contextmanager
def input_gradient(kind: str) -> Iterator[None]:
    """Within this block, :class:`Conv2D` layers called (or traced) use input gradient ``kind``.

    Args:
        kind: one of :data:`INPUT_GRADIENTS`. The benchmarks time both implementations with it
            and count a step's FLOPs as TensorFlow's own gradients define them.
    """
    if kind not in INPUT_GRADIENTS:
        raise ValueError(f"input gradient must be one of {INPUT_GRADIENTS}, got {kind!r}")
    previous, _choice["input_gradient"] = _choice["input_gradient"], kind
    try:
        yield
    finally:
        _choice["input_gradient"] = previous


@functools.cache
def _has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))  # fixed once TensorFlow has started


@functools.cache
def _onednn() -> bool:
    return onednn_enabled()  # fixed once TensorFlow has loaded


def fast_gradient_applies() -> bool:
    """Whether a stride-1 "valid" :class:`Conv2D` traced now gets this module's input gradient."""
    kind = _choice["input_gradient"]
    if kind == "native" or _has_gpu():
        return False
    return kind == "fast" or not _onednn()


@keras.saving.register_keras_serializable(package="lba_tf")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a faster input gradient for stride-1 "valid" convolutions on CPU.

    Where that gradient applies is :func:`fast_gradient_applies`.

    Takes the arguments of ``keras.layers.Conv2D``; outputs, weights and their gradients are the
    same up to float32 rounding (1x1 kernels: identical).

    Examples:

    >>> conv = Conv2D(8, 3, padding="valid", use_bias=False)
    >>> conv(tf.zeros([2, 10, 6, 4])).shape
    TensorShape([2, 8, 4, 8])
    """

    def convolution_op(self, inputs, kernel):
        if (
            tuple(self.strides) == (1, 1)
            and self.padding == "valid"
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
            and fast_gradient_applies()
        ):
            return conv2d_valid_stride1(inputs, tf.convert_to_tensor(kernel))
        return super().convolution_op(inputs, kernel)
