"""Preprocessing: channel replication, Lanczos resize to uint8, ImageNet normalisation."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lba_tf.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode_image, normalize, resize_to_uint8


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


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
