"""Preprocessing shared by training, evaluation and the exported serving graph.

One definition of how pixels become model inputs, so that an image gets the same numbers in the
input pipeline, in ``lba_tf.evaluate`` and in TensorFlow Serving.
"""

from __future__ import annotations

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Decode one encoded JPEG/PNG/BMP (or GIF first frame) to uint8 ``[H, W, 3]``.

    Grayscale images (IR cameras often write them) are replicated to three channels and an alpha
    channel is dropped.

    Args:
        data: a scalar string tensor holding the file's bytes.
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def to_three_channels(images: tf.Tensor) -> tf.Tensor:
    """Replicate a single-channel image (or batch) ``[..., H, W, 1]`` to ``[..., H, W, 3]``."""
    images = tf.convert_to_tensor(images)
    if images.shape[-1] == 1:
        return tf.repeat(images, 3, axis=-1)
    return images


def resize_to_uint8(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Resize with an antialiased Lanczos-3 filter and round back to uint8.

    This is the once-only resize of the recipe (images resized to ``height x width`` with
    Lanczos, then stored as 8-bit), applied to ``[H, W, 3]`` or ``[B, H, W, 3]`` uint8 tensors.
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), (height, width),
                              method=tf.image.ResizeMethod.LANCZOS3, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels ``[..., 3]`` -> float32 ``x / 255`` standardised with the ImageNet mean and std.

    Applied to infrared images too, as the recipe does.
    """
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)
