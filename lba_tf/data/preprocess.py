"""Preprocessing shared by training, evaluation and the exported serving graph.

One definition of how pixels become model inputs, so that an image gets the same numbers in the
input pipeline, in ``lba_tf.evaluate`` and in TensorFlow Serving.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


PIXELS_VERSION = "pil-decode-lanczos-1"
"""Names how ``decode_image`` and ``resize_to_uint8`` compute pixels; stored pixel caches are keyed
by it, so a change of either is never served from an old cache."""
JPEG_MAGIC = b"\xff\xd8\xff"
PIL_PRECISION_BITS = 22
"""Fixed-point precision of Pillow's 8-bit resampling (``32 - 8 - 2`` bits)."""
LANCZOS_SUPPORT = 3.0


def _little_endian(data: tf.Tensor, offset: int, size: int) -> tf.Tensor:
    dtype = {2: tf.uint16, 4: tf.int32}[size]
    return tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, size), dtype, little_endian=True)[0], tf.int32)


def _decode_bmp(data: tf.Tensor) -> tf.Tensor:
    """A BMP as PIL decodes it: 8-bit images through their colour table (TensorFlow's decoder
    returns the indices), 24- and 32-bit as RGB."""
    pixels = tf.io.decode_bmp(data, channels=0)

    def through_palette():
        # The colour table follows the 14-byte file header and the DIB header (whose size is its
        # first field): colours_used (0: 256) entries of blue, green, red, reserved.
        start = 14 + _little_endian(data, 14, 4)
        used = _little_endian(data, 46, 4)
        count = tf.where(used > 0, tf.minimum(used, 256), 256)
        table = tf.reshape(tf.io.decode_raw(tf.strings.substr(data, start, 4 * count), tf.uint8), [-1, 4])
        index = tf.minimum(tf.cast(pixels[..., 0], tf.int32), tf.shape(table)[0] - 1)
        return tf.gather(tf.reverse(table[:, :3], axis=[1]), index)

    def direct():
        return tf.cond(
            tf.equal(tf.shape(pixels)[-1], 1), lambda: tf.repeat(pixels[..., :1], 3, axis=-1), lambda: pixels[..., :3]
        )

    return tf.cond(tf.equal(_little_endian(data, 28, 2), 8), through_palette, direct)


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Decode one encoded JPEG/PNG/BMP (or GIF first frame) to uint8 ``[H, W, 3]``, as
    ``numpy.asarray(PIL.Image.open(f).convert("RGB"))`` decodes it.

    JPEG goes through libjpeg's accurate integer IDCT (``INTEGER_ACCURATE``, libjpeg's
    ``JDCT_ISLOW``, which Pillow uses) with fancy upsampling, not TensorFlow's default fast IDCT
    (measured: 64% of pixels off PIL's by a mean of 1 grey level, up to 9). 8-bit BMPs are
    looked up in their colour table. Grayscale images (IR cameras often write them) are
    replicated to three channels and an alpha channel is dropped. A 16-bit PNG is scaled to
    8 bits (``round(v * 255 / 65535)``); PIL clips it instead, and no dataset here has one.

    Args:
        data: a scalar string tensor holding the file's bytes.
    """
    magic = tf.strings.substr(data, 0, 3)
    is_jpeg = tf.equal(magic, JPEG_MAGIC)
    is_bmp = tf.equal(tf.strings.substr(magic, 0, 2), b"BM")
    image = tf.case(
        [
            (is_jpeg, lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")),
            (is_bmp, lambda: _decode_bmp(data)),
        ],
        default=lambda: tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8),
        exclusive=False,
    )
    image.set_shape([None, None, 3])
    return image


def to_three_channels(images: tf.Tensor) -> tf.Tensor:
    """Replicate a single-channel image (or batch) ``[..., H, W, 1]`` to ``[..., H, W, 3]``."""
    images = tf.convert_to_tensor(images)
    if images.shape[-1] == 1:
        return tf.repeat(images, 3, axis=-1)
    return images


def _sinc(x: tf.Tensor) -> tf.Tensor:
    safe = tf.where(tf.equal(x, 0.0), tf.ones_like(x), x) * np.pi
    return tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(safe) / safe)


def _lanczos(x: tf.Tensor) -> tf.Tensor:
    inside = (x >= -LANCZOS_SUPPORT) & (x < LANCZOS_SUPPORT)
    return tf.where(inside, _sinc(x) * _sinc(x / LANCZOS_SUPPORT), tf.zeros_like(x))


def pil_lanczos_weights(in_size: tf.Tensor, out_size: int) -> tf.Tensor:
    """Pillow's fixed-point Lanczos weights resizing ``in_size`` pixels to ``out_size``.

    Pillow's 8-bit resampling, step by step in float64: output pixel ``i`` is centred at
    ``(i + 0.5) * scale`` (``scale = in / out``); the filter is widened by
    ``max(scale, 1)`` (antialiasing when shrinking) and covers the input pixels from
    ``trunc(center - support + 0.5)`` to ``trunc(center + support + 0.5)``, clipped to the image;
    the weights are normalised to sum to one and rounded to integers in units of
    ``2**-PIL_PRECISION_BITS`` (half away from zero).

    Args:
        in_size: the input length (a scalar tensor: serving inputs have any size).
        out_size: the output length.

    Returns:
        float64 ``[out_size, in_size]``, integer-valued (the fixed-point weights).
    """
    in_length = tf.cast(in_size, tf.int32)
    in_size = tf.cast(in_size, tf.float64)
    scale = in_size / out_size
    filterscale = tf.maximum(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    center = (tf.range(out_size, dtype=tf.float64)[:, None] + 0.5) * scale
    start = tf.maximum(_trunc(center - support + 0.5), 0.0)
    stop = tf.minimum(_trunc(center + support + 0.5), in_size)
    # Only the band each output pixel covers is computed (Pillow's ksize taps), then placed in a
    # dense matrix: the filter's sines over every (output, input) pair cost more than resampling.
    taps = 2 * tf.cast(tf.math.ceil(support), tf.int32) + 1
    j = start + tf.range(taps, dtype=tf.float64)[None, :]
    weights = _lanczos((j - center + 0.5) * (1.0 / filterscale))
    covered = j < stop
    weights = tf.where(covered, weights, tf.zeros_like(weights))
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    weights = weights / tf.where(tf.equal(total, 0.0), tf.ones_like(total), total)
    fixed = weights * float(1 << PIL_PRECISION_BITS)
    fixed = _trunc(tf.where(fixed < 0.0, fixed - 0.5, fixed + 0.5))
    rows = tf.broadcast_to(tf.range(out_size)[:, None], tf.shape(j))
    index = tf.stack([tf.boolean_mask(rows, covered), tf.cast(tf.boolean_mask(j, covered), tf.int32)], axis=1)
    return tf.scatter_nd(index, tf.boolean_mask(fixed, covered), tf.stack([out_size, in_length]))


def _trunc(x: tf.Tensor) -> tf.Tensor:
    """Round toward zero, as C's cast of a double to int."""
    return tf.where(x < 0.0, tf.math.ceil(x), tf.math.floor(x))


def _resample(images: tf.Tensor, weights: tf.Tensor, axis: str) -> tf.Tensor:
    """One pass of Pillow's 8-bit resampling along ``"width"`` or ``"height"``.

    ``images`` holds integer pixel values in float64 ``[..., H, W, C]``; the products and their
    sums are integers below 2**40, so float64 adds them exactly in any order, as Pillow's int32
    accumulator does. Each output is ``clip((2**(P-1) + sum) >> P, 0, 255)``.
    """
    equation = "...hwc,xw->...hxc" if axis == "width" else "...hwc,yh->...ywc"
    total = tf.einsum(equation, images, weights) + float(1 << (PIL_PRECISION_BITS - 1))
    return tf.clip_by_value(tf.math.floor(total / float(1 << PIL_PRECISION_BITS)), 0.0, 255.0)


def resize_to_uint8(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Resize as Pillow's ``Image.resize((width, height), Image.LANCZOS)`` does, pixel for pixel.

    This is the once-only resize of the recipe (images resized to ``height x width`` with PIL's
    antialiased Lanczos, then stored as 8-bit), applied to ``[H, W, 3]`` or ``[B, H, W, 3]``
    uint8 tensors: a horizontal pass rounded to 8 bits, then a vertical pass, each with
    ``pil_lanczos_weights``; a dimension that keeps its size is not resampled, as in Pillow.
    TensorFlow's own Lanczos (``tf.image.resize``, float, one pass) differs from PIL's on 16% of
    pixels, by up to 24 grey levels at clipped edges.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    in_height, in_width = shape[-3], shape[-2]
    x = tf.cast(images, tf.float64)
    x = tf.cond(
        tf.equal(in_width, width), lambda: x, lambda: _resample(x, pil_lanczos_weights(in_width, width), "width")
    )
    x = tf.cond(
        tf.equal(in_height, height), lambda: x, lambda: _resample(x, pil_lanczos_weights(in_height, height), "height")
    )
    out = tf.cast(x, tf.uint8)
    out.set_shape(images.shape[:-3].concatenate([height, width, images.shape[-1]]))
    return out


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels ``[..., 3]`` -> float32 ``x / 255`` standardised with the ImageNet mean and std.

    Applied to infrared images too, as the recipe does.
    """
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)
