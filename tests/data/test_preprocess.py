"""Preprocessing: decoding and resizing as PIL does them (the authors' pipeline), channel
replication, ImageNet normalisation.

The reference is Pillow: the authors' data loaders open every image with ``PIL.Image.open`` and
resize it with ``Image.ANTIALIAS`` (an alias of ``Image.LANCZOS``). Pillow 13 changed which of
the two resampling passes runs first for some shapes (e.g. a width enlarged while the height
shrinks), which moves those images' pixels; Pillow 10 to 12, like the Pillow of the authors'
2021 setup, always resample horizontally first, and the project pins ``pillow<13``.
"""

import io

import numpy as np
import PIL
import pytest
import tensorflow as tf
from PIL import Image

from lba_tf.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIL_PRECISION_BITS,
    decode_image,
    normalize,
    pil_lanczos_weights,
    resize_to_uint8,
)


def _encode(array, fmt, **options):
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _pil_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _textured(height, width, rng):
    """Smooth colour fields, flat blocks with sharp edges (where Lanczos rings and clips) and
    sensor-like noise: the frequencies of a person crop."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = 128 + 90 * np.stack(
        [np.sin(x * rng.uniform(2, 20) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(2, 20)) for _ in range(3)], -1
    )
    image += rng.normal(0, 12, image.shape)
    for _ in range(6):
        top, left = rng.integers(0, height), rng.integers(0, width)
        image[top : top + rng.integers(2, height // 2 + 3), left : left + rng.integers(2, width // 2 + 3)] = (
            rng.uniform(0, 255, 3)
        )
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _pil_resize(image, height, width):
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def test_reference_is_a_pillow_that_resamples_horizontally_first():
    assert int(PIL.__version__.split(".")[0]) < 13, "tests/data/test_preprocess.py: see the docstring"


_RGB = _textured(74, 46, np.random.default_rng(0))
DECODE_CASES = {
    "jpeg 4:2:0 q90": lambda: _encode(_RGB, "JPEG", quality=90),
    "jpeg 4:4:4": lambda: _encode(_RGB, "JPEG", quality=85, subsampling=0),
    "jpeg 4:2:2": lambda: _encode(_RGB, "JPEG", quality=85, subsampling=1),
    "jpeg progressive": lambda: _encode(_RGB, "JPEG", quality=80, progressive=True),
    "jpeg grey": lambda: _encode(Image.fromarray(_RGB).convert("L"), "JPEG", quality=90),
    "jpeg cmyk": lambda: _encode(Image.fromarray(_RGB).convert("CMYK"), "JPEG", quality=90),
    "png rgb": lambda: _encode(_RGB, "PNG"),
    "png grey": lambda: _encode(Image.fromarray(_RGB).convert("L"), "PNG"),
    "png grey+alpha": lambda: _encode(Image.fromarray(_RGB).convert("LA"), "PNG"),
    "png rgba": lambda: _encode(Image.fromarray(_RGB).convert("RGBA"), "PNG"),
    "png palette": lambda: _encode(Image.fromarray(_RGB).convert("P", palette=Image.ADAPTIVE), "PNG"),
    "bmp 24-bit": lambda: _encode(_RGB, "BMP"),
    "bmp 8-bit grey": lambda: _encode(Image.fromarray(_RGB).convert("L"), "BMP"),
    "bmp 8-bit palette": lambda: _encode(Image.fromarray(_RGB).convert("P", palette=Image.ADAPTIVE), "BMP"),
    "bmp 8-bit 16 colours": lambda: _encode(
        Image.fromarray(_RGB).convert("P", palette=Image.ADAPTIVE, colors=16), "BMP"
    ),
    "gif": lambda: _encode(Image.fromarray(_RGB).convert("P", palette=Image.ADAPTIVE), "GIF"),
}


@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_decode_equals_pil(case):
    data = DECODE_CASES[case]()
    out = decode_image(tf.constant(data)).numpy()
    assert out.shape == (74, 46, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _pil_decode(data))


def test_jpeg_with_tensorflows_default_idct_would_differ_from_pil():
    # what the test above guards against: TensorFlow's default (fast) IDCT is not libjpeg's islow
    data = DECODE_CASES["jpeg 4:2:0 q90"]()
    fast = tf.io.decode_image(data, channels=3).numpy()
    assert (fast != _pil_decode(data)).mean() > 0.1


def test_16_bit_png_is_scaled_to_8_bits():
    values = np.array([[0, 257, 257 * 128, 65535, 300]], np.uint16)
    out = decode_image(tf.constant(_encode(Image.fromarray(values), "PNG"))).numpy()
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 1])  # round(v * 255 / 65535)


@pytest.mark.parametrize(
    "kind,sizes",
    [
        # SYSU-MM01 / LLCM-sized crops shrunk to the recipe's 288 x 144
        ("down", dict(height=(200, 520), width=(80, 260), out=(288, 144))),
        # RegDB-sized (128 x 64) and small crops enlarged
        ("up", dict(height=(60, 288), width=(30, 144), out=(288, 144))),
        # a shrink in one dimension and an enlargement in the other, and the demo's size
        ("mixed", dict(height=(40, 400), width=(20, 200), out=(64, 32))),
    ],
)
def test_resize_equals_pil_lanczos_on_crops(kind, sizes):
    rng = np.random.default_rng({"down": 1, "up": 2, "mixed": 3}[kind])
    mismatched = 0
    for _ in range(100):
        height, width = int(rng.integers(*sizes["height"])), int(rng.integers(*sizes["width"]))
        image = _textured(height, width, rng)
        ours = resize_to_uint8(tf.constant(image), *sizes["out"]).numpy()
        mismatched += not np.array_equal(ours, _pil_resize(image, *sizes["out"]))
    assert mismatched == 0


def test_tensorflows_own_lanczos_would_differ_from_pil():
    image = _textured(400, 180, np.random.default_rng(4))
    theirs = tf.image.resize(image.astype(np.float32), (288, 144), "lanczos3", antialias=True)
    theirs = np.clip(np.round(theirs.numpy()), 0, 255).astype(np.uint8)
    assert (theirs != _pil_resize(image, 288, 144)).mean() > 0.05


def test_batched_resize_equals_each_image_and_keeps_unchanged_sizes():
    rng = np.random.default_rng(5)
    batch = np.stack([_textured(50, 30, rng) for _ in range(3)])
    out = resize_to_uint8(tf.constant(batch), 288, 144).numpy()
    for image, resized in zip(batch, out):
        np.testing.assert_array_equal(resized, _pil_resize(image, 288, 144))
    np.testing.assert_array_equal(resize_to_uint8(tf.constant(batch), 50, 30).numpy(), batch)
    # one dimension kept: only the other is resampled, as in Pillow
    np.testing.assert_array_equal(resize_to_uint8(tf.constant(batch[0]), 50, 17).numpy(), _pil_resize(batch[0], 50, 17))


def test_fixed_point_weights_of_a_two_to_one_shrink():
    # 4 -> 2: scale 2, filter widened to support 6; output 0 is centred at 1.0 and covers all 4
    # inputs at distances -0.5, 0.5, 1.5, 2.5 (halved: -0.25, 0.25, 0.75, 1.25).
    def lanczos(x):
        return np.sinc(x) * np.sinc(x / 3)

    raw = lanczos(np.array([-0.25, 0.25, 0.75, 1.25]))
    expected = np.trunc(raw / raw.sum() * 2**PIL_PRECISION_BITS + np.where(raw < 0, -0.5, 0.5))
    weights = pil_lanczos_weights(tf.constant(4), 2).numpy()
    np.testing.assert_array_equal(weights[0], expected)
    np.testing.assert_array_equal(weights[1], expected[::-1])  # mirror image


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_decode_gray_image_gives_three_equal_channels(fmt):
    gray = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7) * 3
    out = decode_image(tf.constant(_encode(gray, fmt))).numpy()
    assert out.shape == (12, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    if fmt != "JPEG":  # lossless formats give the pixels back
        np.testing.assert_array_equal(out[..., 0], gray)


def test_decode_drops_alpha():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    out = decode_image(tf.constant(_encode(rgba, "PNG"))).numpy()
    assert out.shape == (4, 5, 3) and (out[..., 0] == 200).all()


def test_normalize_matches_hand_computation():
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    expected = (np.array([0, 128, 255]) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(normalize(pixels).numpy()[0, 0], expected, rtol=1e-6)


def test_resize_keeps_a_constant_image_constant_and_uint8():
    image = np.full((50, 30, 3), 77, np.uint8)
    out = resize_to_uint8(image, 24, 12).numpy()
    assert out.shape == (24, 12, 3) and out.dtype == np.uint8 and (out == 77).all()


def test_resize_downsampling_is_antialiased():
    # a 1-pixel checkerboard averages to mid-grey with antialiasing; without it, it would alias
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    out = resize_to_uint8(board, 16, 16).numpy().astype(float)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3
