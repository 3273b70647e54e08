"""A tiny stand-in for the LbA encoder: the same ``embed`` interface, milliseconds per call.

Two conv stems (one per modality, chosen per image), a shared conv, global average pooling, a
dense projection and L2 normalisation, as the real two-stream encoder does at a far smaller size.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

IMAGE_SIZE = (32, 16)
"""``(height, width)`` the stand-in is exported for in the tests."""


class StandInEncoder(keras.Model):
    """Two-stream toy encoder with ``embed(images, modality, training=False)``.

    Args:
        channels: stem channels.
        dim: embedding size D.
        seed: weight initialisation seed.
    """

    def __init__(self, channels: int = 4, dim: int = 8, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.dim, self.seed = channels, dim, seed
        init = keras.initializers.GlorotUniform

        def conv(filters, strides, index):
            return layers.Conv2D(
                filters, 3, strides=strides, padding="same", activation="relu", kernel_initializer=init(seed + index)
            )

        self.visible_stem = conv(channels, 2, 0)
        self.infrared_stem = conv(channels, 2, 1)
        self.shared = conv(2 * channels, 1, 2)
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(dim, kernel_initializer=init(seed + 3))
        self.embed(np.zeros((1, *IMAGE_SIZE, 3), np.float32), np.zeros((1,), np.int32))

    def embed(self, images, modality, training=False):
        """float32 ``[B, H, W, 3]``, int32 ``[B]`` -> float32 ``[B, dim]``, L2-normalised."""
        infrared = ops.reshape(ops.equal(modality, 1), (-1, 1, 1, 1))
        x = ops.where(infrared, self.infrared_stem(images), self.visible_stem(images))
        x = self.head(self.pool(self.shared(x)))
        return x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)

    def call(self, inputs, training=False):
        images, modality = inputs
        return self.embed(images, modality, training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "dim": self.dim, "seed": self.seed}
