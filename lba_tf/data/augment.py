"""Training augmentation: per-image TensorFlow functions driven by stateless seeds.

Every function takes one image ``[H, W, C]`` (uint8 or float) and a seed ``[2]`` (int32/int64)
and is a pure function of the two, so a pipeline that derives seeds from (seed, epoch, step,
index) is deterministic and resumes exactly. The recipe uses only the horizontal flip; the others
are common options in visible-infrared re-identification, off by default.
"""

from __future__ import annotations

import tensorflow as tf

from lba_tf.config import AugmentConfig
from lba_tf.data.preprocess import normalize

ERASING_AREA = (0.02, 0.4)
ERASING_ASPECT = (0.3, 1.0 / 0.3)
ERASING_ATTEMPTS = 10


def _coin(seed: tf.Tensor, prob: float | tf.Tensor) -> tf.Tensor:
    """A boolean scalar that is True with probability ``prob``."""
    return tf.random.stateless_uniform([], seed) < tf.cast(prob, tf.float32)


def _split(seed: tf.Tensor, num: int) -> tf.Tensor:
    """``num`` independent seeds ``[num, 2]`` from one."""
    return tf.random.experimental.stateless_split(seed, num)


def random_flip(image: tf.Tensor, seed: tf.Tensor, prob: float = 0.5) -> tf.Tensor:
    """Mirror ``image`` ``[H, W, C]`` left-right with probability ``prob``."""
    image = tf.convert_to_tensor(image)
    return tf.cond(_coin(seed, prob), lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_pad_crop(image: tf.Tensor, seed: tf.Tensor, pad: int) -> tf.Tensor:
    """Zero-pad ``image`` ``[H, W, C]`` by ``pad`` pixels on every side, then crop ``[H, W, C]`` back.

    The crop's corner is uniform over the ``(2 pad + 1)^2`` positions, so the result is the image
    shifted by up to ``pad`` pixels in each direction with zeros filling the gap.
    """
    image = tf.convert_to_tensor(image)
    if pad == 0:
        return image
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    corner = tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    return tf.slice(padded, [corner[0], corner[1], 0], shape)


def channel_augmentation(image: tf.Tensor, seed: tf.Tensor, prob: float | tf.Tensor) -> tf.Tensor:
    """With probability ``prob``, replace ``image`` ``[H, W, 3]`` by one of its channels repeated to 3.

    The channel (R, G or B) is chosen uniformly. This is the channel exchange of CAJ (Ye et al.,
    ICCV 2021), meant for visible images: it makes them look like single-channel infrared ones.
    """
    image = tf.convert_to_tensor(image)
    seeds = _split(seed, 2)

    def single_channel():
        channel = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=3, dtype=tf.int32)
        return tf.repeat(tf.gather(image, [channel], axis=-1), 3, axis=-1)

    return tf.cond(_coin(seeds[0], prob), single_channel, lambda: image)


def random_erasing(
    image: tf.Tensor,
    seed: tf.Tensor,
    prob: float,
    fill: str = "mean",
    area: tuple[float, float] = ERASING_AREA,
    aspect: tuple[float, float] = ERASING_ASPECT,
) -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020) of one rectangle of a normalised image ``[H, W, C]``.

    With probability ``prob`` a rectangle is drawn: target area ``U(area) * H * W``, aspect ratio
    (height / width) ``U(aspect)``, sides ``round(sqrt(area * aspect))`` and
    ``round(sqrt(area / aspect))``; the first of ``ERASING_ATTEMPTS`` draws that fits strictly
    inside the image is erased at a uniform position. If none fits, the image is unchanged.

    Args:
        image: a normalised float image ``[H, W, C]``.
        seed: the stateless seed ``[2]``.
        prob: the probability of erasing.
        fill: ``"mean"`` fills with the ImageNet mean pixel (0 after normalisation);
            ``"random"`` with standard normal noise.
        area: the range of the erased fraction of the image.
        aspect: the range of the rectangle's height / width.
    """
    if fill not in ("mean", "random"):
        raise ValueError(f"fill must be 'mean' or 'random', got {fill!r}")
    image = tf.convert_to_tensor(image)
    seeds = _split(seed, 6)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    image_area = tf.cast(height * width, tf.float32)
    target = tf.random.stateless_uniform([ERASING_ATTEMPTS], seeds[1], *area) * image_area
    ratio = tf.random.stateless_uniform([ERASING_ATTEMPTS], seeds[2], *aspect)
    sides_h = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    sides_w = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (sides_h < height) & (sides_w < width) & (sides_h > 0) & (sides_w > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    def erase():
        h, w = sides_h[first], sides_w[first]
        top = tf.random.stateless_uniform([], seeds[3], 0, height - h + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], seeds[4], 0, width - w + 1, dtype=tf.int32)
        rows = tf.range(height)[:, None, None]
        cols = tf.range(width)[None, :, None]
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        if fill == "mean":
            values = tf.zeros_like(image)
        else:
            values = tf.random.stateless_normal(shape, seeds[5], dtype=image.dtype)
        return tf.where(inside, values, image)

    return tf.cond(_coin(seeds[0], prob) & fits[first], erase, lambda: image)


def augment_image(
    image: tf.Tensor,
    seed: tf.Tensor,
    visible: bool | tf.Tensor,
    config: AugmentConfig,
    erasing_fill: str = "mean",
) -> tf.Tensor:
    """The training transform of one uint8 image: augmentation, then ImageNet normalisation.

    Order: pad-and-crop, horizontal flip, channel augmentation (visible images only) on the
    uint8 pixels; normalisation; random erasing on the normalised image. Disabled steps cost
    nothing.

    Args:
        image: uint8 ``[H, W, 3]``.
        seed: the stateless seed ``[2]`` of this image.
        visible: whether the image is an RGB one (channel augmentation applies to those only).
        config: which augmentations run and with what probability.
        erasing_fill: ``"mean"`` or ``"random"``, see :func:`random_erasing`.

    Returns:
        float32 ``[H, W, 3]``, normalised.
    """
    seeds = _split(seed, 4)
    if config.pad_crop > 0:
        image = random_pad_crop(image, seeds[0], config.pad_crop)
    if config.flip_prob > 0:
        image = random_flip(image, seeds[1], config.flip_prob)
    if config.channel_augmentation > 0:
        prob = tf.where(tf.cast(visible, tf.bool), config.channel_augmentation, 0.0)
        image = channel_augmentation(image, seeds[2], prob)
    image = normalize(image)
    if config.random_erasing > 0:
        image = random_erasing(image, seeds[3], config.random_erasing, fill=erasing_fill)
    return image
