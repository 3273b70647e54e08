"""Augmentation: flip, pad-and-crop, random erasing, channel augmentation and their composition."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import AugmentConfig
from lba_tf.data.augment import (
    augment_image,
    channel_augmentation,
    random_erasing,
    random_flip,
    random_pad_crop,
)
from lba_tf.data.preprocess import normalize

H, W = 20, 12
SEEDS = [tf.constant([s, 7 * s + 1], tf.int64) for s in range(40)]
OFF = AugmentConfig(flip_prob=0.0, pad_crop=0, random_erasing=0.0, channel_augmentation=0.0)


@pytest.fixture(scope="module")
def image():
    # distinct channels, no zeros, so erased or padded pixels are recognisable
    return np.random.default_rng(0).integers(1, 256, (H, W, 3)).astype(np.uint8)


def test_flip_with_p1_is_an_exact_mirror_and_p0_the_identity(image):
    for seed in SEEDS[:5]:
        np.testing.assert_array_equal(random_flip(image, seed, 1.0).numpy(), image[:, ::-1])
        np.testing.assert_array_equal(random_flip(image, seed, 0.0).numpy(), image)


def test_flip_half_the_time_with_p_half(image):
    flipped = sum(not np.array_equal(random_flip(image, s, 0.5).numpy(), image) for s in SEEDS)
    assert 8 <= flipped <= 32  # Binomial(40, 0.5): mean 20, std 3.2


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image(image):
    pad = 3
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    corners = set()
    for seed in SEEDS:
        out = random_pad_crop(image, seed, pad).numpy()
        assert out.shape == image.shape and out.dtype == np.uint8
        matches = [
            (y, x)
            for y in range(2 * pad + 1)
            for x in range(2 * pad + 1)
            if np.array_equal(out, padded[y : y + H, x : x + W])
        ]
        assert len(matches) == 1
        corners.add(matches[0])
    assert len(corners) > 10  # the corner varies over the 49 positions
    np.testing.assert_array_equal(random_pad_crop(image, SEEDS[0], 0).numpy(), image)


def test_channel_augmentation_gives_three_copies_of_one_original_channel(image):
    chosen = set()
    for seed in SEEDS:
        out = channel_augmentation(image, seed, 1.0).numpy()
        channel = [c for c in range(3) if np.array_equal(out, np.repeat(image[..., c : c + 1], 3, -1))]
        assert len(channel) == 1
        chosen.add(channel[0])
    assert chosen == {0, 1, 2}
    np.testing.assert_array_equal(channel_augmentation(image, SEEDS[0], 0.0).numpy(), image)


def _erased_box(before, after):
    """The erased pixels as a box (top, left, h, w); asserts they form exactly one rectangle."""
    changed = np.any(before != after, axis=-1)
    ys, xs = np.nonzero(changed)
    top, left, h, w = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert changed[top : top + h, left : left + w].all() and changed.sum() == h * w
    return top, left, h, w


def test_random_erasing_erases_one_rectangle_of_bounded_area_with_the_mean(image):
    x = normalize(image).numpy()
    h_big, w_big = 64, 32
    big = np.random.default_rng(1).normal(size=(h_big, w_big, 3)).astype(np.float32) + 5.0
    for seed in SEEDS:
        out = random_erasing(big, seed, 1.0).numpy()
        if np.array_equal(out, big):
            continue  # no draw fitted (possible, rare)
        top, left, h, w = _erased_box(big, out)
        assert (out[top : top + h, left : left + w] == 0).all()  # ImageNet mean = 0 after normalisation
        assert h < h_big and w < w_big
        # sides are round(sqrt(a r)) and round(sqrt(a / r)) with a in [0.02, 0.4] * 2048 and
        # r in [0.3, 3.33]: h * w lies within a +- (0.5 (h + w) + 0.25) of the target area
        slack = 0.5 * (h + w) + 0.25
        assert 0.02 * h_big * w_big - slack <= h * w <= 0.4 * h_big * w_big + slack
        # the drawn aspect r = h' / w' with h' in [h - 0.5, h + 0.5], w' in [w - 0.5, w + 0.5]
        assert (h + 0.5) / (w - 0.5) >= 0.3 and (h - 0.5) / (w + 0.5) <= 1 / 0.3
    erased = sum(not np.array_equal(random_erasing(big, s, 1.0).numpy(), big) for s in SEEDS)
    assert erased >= 35
    np.testing.assert_array_equal(random_erasing(x, SEEDS[0], 0.0).numpy(), x)


def test_random_erasing_random_fill_is_noise_inside_the_box():
    big = np.full((64, 32, 3), 9.0, np.float32)
    out = random_erasing(big, SEEDS[3], 1.0, fill="random").numpy()
    top, left, h, w = _erased_box(big, out)
    noise = out[top : top + h, left : left + w]
    assert abs(noise.mean()) < 0.5 and 0.5 < noise.std() < 1.5
    with pytest.raises(ValueError, match="fill"):
        random_erasing(big, SEEDS[0], 1.0, fill="zeros")


def test_augment_with_everything_off_is_plain_normalisation(image):
    out = augment_image(image, SEEDS[0], True, OFF)
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), normalize(image).numpy())


def test_augment_is_a_pure_function_of_the_seed(image):
    config = AugmentConfig(flip_prob=0.5, pad_crop=2, random_erasing=0.5, channel_augmentation=0.5)
    outs = [augment_image(image, seed, True, config).numpy() for seed in SEEDS[:6]]
    again = [augment_image(image, seed, True, config).numpy() for seed in SEEDS[:6]]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in outs}) > 1


def test_channel_augmentation_applies_to_visible_images_only(image):
    config = AugmentConfig(flip_prob=0.0, pad_crop=0, random_erasing=0.0, channel_augmentation=1.0)
    gray = [augment_image(image, s, True, config).numpy() for s in SEEDS[:5]]
    as_channel = [normalize(np.repeat(image[..., c : c + 1], 3, -1)).numpy() for c in range(3)]
    assert all(any(np.array_equal(g, c) for c in as_channel) for g in gray)
    infrared = augment_image(image, SEEDS[0], tf.constant(False), config).numpy()
    np.testing.assert_array_equal(infrared, normalize(image).numpy())
