"""The two-stream encoder: one ResNet stem per modality, one shared ResNet body."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lba_tf.models.resnet import ResNetBody, ResNetStem, feature_channels


def _run_stem(stem: ResNetStem, images: tf.Tensor, training) -> tf.Tensor:
    """Apply ``stem`` to a possibly empty batch.

    An empty batch runs in inference mode: in training mode BatchNorm would average over zero
    images and write NaN into its moving statistics.
    """
    if not training:
        return stem(images, training=False)
    return tf.cond(tf.shape(images)[0] > 0,
                   lambda: stem(images, training=True),
                   lambda: stem(images, training=False))


@keras.saving.register_keras_serializable(package="lba_tf")
class TwoStreamEncoder(keras.Model):
    """Visible and infrared stems in front of one shared ResNet body.

    Each modality has its own ``ResNetStem`` (conv1, bn1, ReLU, max-pool); ``layer1`` ...
    ``layer4`` are shared. All weights exist right after construction (none depends on the image
    size), so PyTorch weights can be assigned before the first call.

    Args:
        depth: ResNet depth, 18, 34 or 50.
        width: stem channels (64 for the standard networks).
        last_stride: stride of layer4; 1 keeps layer3's resolution.

    Call ``encoder(images, modality)`` with ``images`` ``[B, H, W, 3]`` (any mix of modalities)
    and ``modality`` int32 ``[B]`` (0 visible, 1 infrared, as ``records.MODALITY_INDEX``);
    ``forward_pair(visible, infrared)`` for a training batch. Both return ``{"layer3": [N, H/16,
    W/16, C3], "layer4": [N, H/16, W/16, C4]}`` (with ``last_stride=1``), where
    ``(C3, C4) = feature_channels(depth, width)``.

    Examples:
    >>> encoder = TwoStreamEncoder(depth=18, width=16)
    >>> images = keras.ops.zeros((3, 64, 32, 3))
    >>> tuple(encoder(images, keras.ops.array([0, 1, 0], "int32"))["layer4"].shape)
    (3, 4, 2, 128)
    """

    def __init__(self, depth: int = 50, width: int = 64, last_stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        self.width = width
        self.last_stride = last_stride
        self.layer3_channels, self.layer4_channels = feature_channels(depth, width)
        self.visible_stem = ResNetStem(width, name="visible_stem")
        self.infrared_stem = ResNetStem(width, name="infrared_stem")
        self.body = ResNetBody(depth, width, last_stride, name="body")
        self.build((None, None, None, 3))

    def build(self, images_shape, modality_shape=None):
        if self.built:
            return
        self.visible_stem.build(images_shape)
        self.infrared_stem.build(images_shape)
        self.body.build((None, None, None, self.width))

    def forward_pair(self, visible, infrared, training=None) -> dict:
        """Encode a training batch ``[visible; infrared]``.

        Each stem sees only its half; BatchNorm in the shared body sees all ``N`` images.

        Args:
            visible: ``[N_v, H, W, 3]`` RGB images.
            infrared: ``[N_i, H, W, 3]`` IR images.
            training: BatchNorm mode.

        Returns:
            ``{"layer3": ..., "layer4": ...}`` over the ``N = N_v + N_i`` images, visible first.
        """
        x = ops.concatenate([self.visible_stem(visible, training=training),
                             self.infrared_stem(infrared, training=training)], axis=0)
        return self.body(x, training=training)

    def call(self, images, modality, training=None):
        modality = tf.cast(modality, tf.int32)
        positions = tf.range(tf.shape(images)[0])
        visible, infrared = tf.dynamic_partition(images, modality, 2)
        visible_at, infrared_at = tf.dynamic_partition(positions, modality, 2)
        x = tf.dynamic_stitch([visible_at, infrared_at],
                              [_run_stem(self.visible_stem, visible, training),
                               _run_stem(self.infrared_stem, infrared, training)])
        return self.body(x, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, width=self.width, last_stride=self.last_stride)
        return config
