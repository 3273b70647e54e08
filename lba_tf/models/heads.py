"""The LbA heads: GeM pooling, the BNNeck and the identity classifier."""

from __future__ import annotations

import keras
from keras import ops

from lba_tf.models.batchnorm import TorchBatchNormalization
from lba_tf.models.resnet import BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM


@keras.saving.register_keras_serializable(package="lba_tf")
class GeMPooling(keras.layers.Layer):
    """Generalised-mean (GeM) pooling, fixed exponent: ``(mean over H, W of x**p + eps)**(1/p)``.

    Args:
        p: the exponent (3 in LbA); not trained.
        eps: added to the mean before the root.

    Input ``[N, H, W, C]`` (non-negative, e.g. after a ReLU), output ``[N, C]``.

    Examples:
    >>> tuple(GeMPooling()(keras.ops.ones((2, 18, 9, 2048))).shape)
    (2, 2048)
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.p = p
        self.eps = eps

    def call(self, inputs):
        mean = ops.mean(ops.power(inputs, self.p), axis=(1, 2))
        return ops.power(mean + self.eps, 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p, eps=self.eps)
        return config


@keras.saving.register_keras_serializable(package="lba_tf")
class BNNeck(keras.layers.Layer):
    """BatchNorm over pooled features with the shift (beta) frozen at zero.

    Running statistics update as torch's do (``TorchBatchNormalization``).

    beta stays a (non-trainable) variable so that it is saved and a checkpoint's shift can be
    imported and checked.

    Args:
        gamma_stddev: the scale is initialised from N(1, gamma_stddev).
        epsilon: BatchNorm epsilon (torch default 1e-5).
        momentum: moving-statistics momentum in Keras terms (0.9 = torch 0.1).

    Input and output ``[N, C]``.

    Examples:
    >>> neck = BNNeck()
    >>> tuple(neck(keras.ops.ones((4, 2048)), training=True).shape)
    (4, 2048)
    """

    def __init__(
        self,
        gamma_stddev: float = 0.01,
        epsilon: float = BATCH_NORM_EPSILON,
        momentum: float = BATCH_NORM_MOMENTUM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gamma_stddev = gamma_stddev
        self.epsilon = epsilon
        self.momentum = momentum
        self.batch_norm = TorchBatchNormalization(
            momentum=momentum,
            epsilon=epsilon,
            gamma_initializer=keras.initializers.RandomNormal(1.0, gamma_stddev),
            name="batch_norm",
        )

    def build(self, input_shape):
        self.batch_norm.build(input_shape)
        self.batch_norm.beta.trainable = False

    def call(self, inputs, training=None):
        return self.batch_norm(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(gamma_stddev=self.gamma_stddev, epsilon=self.epsilon, momentum=self.momentum)
        return config


@keras.saving.register_keras_serializable(package="lba_tf")
class IdentityClassifier(keras.layers.Layer):
    """Linear identity classifier without bias, kernel initialised N(0, stddev).

    Args:
        num_classes: number of training identities.
        stddev: standard deviation of the kernel initialisation.

    Input ``[N, C]``, output logits ``[N, num_classes]``.

    Examples:
    >>> tuple(IdentityClassifier(395)(keras.ops.ones((4, 2048))).shape)
    (4, 395)
    """

    def __init__(self, num_classes: int, stddev: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.stddev = stddev

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.num_classes),
            initializer=keras.initializers.RandomNormal(0.0, self.stddev),
            name="kernel",
        )

    def call(self, inputs):
        return ops.matmul(inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, stddev=self.stddev)
        return config
