"""BatchNorm with torch's running statistics: the unbiased batch variance feeds the running variance."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lba_tf")
class TorchBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose moving statistics update as torch's do.

    Both normalise a training batch with its biased variance, but torch's running variance is
    updated with the unbiased one (times n / (n - 1), n = values per channel) and Keras' with the
    biased one; after training, evaluation outputs would differ. Defaults follow torch:
    epsilon 1e-5, momentum 0.9 in Keras terms (torch's 0.1).

    Args:
        momentum: Keras momentum of the moving statistics (1 - torch's momentum).
        epsilon: added to the variance.
        **kwargs: the other arguments of ``keras.layers.BatchNormalization`` (not ``renorm``
            or ``synchronized``).

    Examples:

    >>> bn = TorchBatchNormalization(name="bn1")
    >>> y = bn(keras.ops.ones([2, 4, 4, 8]), training=True)
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        if kwargs.get("renorm") or kwargs.get("synchronized"):
            raise ValueError("TorchBatchNormalization supports neither renorm nor synchronized")
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        mean, variance = ops.moments(x, axes=self._reduction_axes)
        count = ops.cast(ops.size(x) // ops.shape(x)[self.axis], compute_dtype)
        unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
        gamma = ops.cast(self.gamma, compute_dtype) if self.scale else None
        beta = ops.cast(self.beta, compute_dtype) if self.center else None
        out = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta, scale=gamma, epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)
