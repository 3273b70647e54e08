"""Correspondence pictures: warping with a known matching, the drawn panel layout, and the figure
drawn from the alignment's outputs."""

import numpy as np
import tensorflow as tf

from lba_tf.models.lba import LbAModel
from lba_tf.training.visualize import correspondence_figure, draw_correspondences, warp_image


def _quadrants(h=8, w=4):
    # a 2x2-cell image: each cell a distinct flat colour
    image = np.zeros((h, w, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, colour in enumerate(colours):
        r, c = divmod(i, 2)
        image[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2] = colour
    return image


def test_identity_matching_reproduces_the_target():
    target = _quadrants()
    np.testing.assert_array_equal(warp_image(target, np.eye(4), (2, 2)), target)


def test_permutation_matching_moves_cells():
    target = _quadrants()
    swap = np.eye(4)[[3, 2, 1, 0]]  # query cell i takes target cell 3 - i
    warped = warp_image(target, swap, (2, 2))
    np.testing.assert_array_equal(warped[0, 0], target[-1, -1])
    np.testing.assert_array_equal(warped[-1, -1], target[0, 0])


def test_uniform_matching_averages_colours():
    warped = warp_image(_quadrants(), np.full((4, 4), 0.25), (2, 2))
    np.testing.assert_array_equal(warped[0, 0], [128, 128, 64])  # mean of the four colours, rounded


def test_panel_has_query_target_and_warp():
    query, target = _quadrants(), _quadrants()[::-1].copy()
    out = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=0, min_height=1)
    assert out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out[:, :4], query)
    np.testing.assert_array_equal(out[:, 4:8], target)
    np.testing.assert_array_equal(out[:, 8:], target)  # identity matching warps target onto itself
    lines = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=4, min_height=1)
    assert (lines != out).any()


def test_small_images_are_drawn_enlarged_by_a_whole_factor_pixels_repeated():
    query, target = _quadrants(64, 32), _quadrants(64, 32)[::-1].copy()
    out = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=0)
    assert out.shape == (256, 3 * 128, 3)  # 64 x 32 four times over: the least whole factor to 256
    np.testing.assert_array_equal(out[:, :128], np.repeat(np.repeat(query, 4, axis=0), 4, axis=1))
    lines = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=4)
    # the strongest match, cell 0 to cell 0: its line leaves the enlarged query's first cell
    # centre (32, 64) towards the target's, 128 pixels to the right, two pixels wide
    assert (lines[64, 40:120] != out[64, 40:120]).any(axis=-1).all()
    assert (lines[62:66, 80] != out[62:66, 80]).any(axis=-1).sum() >= 2
    assert draw_correspondences(_quadrants(288, 144), _quadrants(288, 144), np.eye(4), (2, 2)).shape == (288, 432, 3)


def test_figure_from_the_alignment_leaves_the_training_pairs_alone():
    model = LbAModel(num_classes=5, depth=18, width=8, num_identities=3, num_instances=2, seed=1)
    model.build_for(32, 16)
    images = tf.random.stateless_normal([12, 32, 16, 3], seed=[0, 1])
    state = model.alignment.seed_state.numpy().copy()
    figure = correspondence_figure(model, images)
    assert figure.shape == (1, 256, 384, 3) and figure.dtype == np.uint8  # 32 x 16, eight times
    np.testing.assert_array_equal(model.alignment.seed_state.numpy(), state)
    baseline = LbAModel(num_classes=5, depth=18, width=8, method="baseline").build_for(32, 16)
    assert correspondence_figure(baseline, images) is None
