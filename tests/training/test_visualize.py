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
    out = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=0)
    assert out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out[:, :4], query)
    np.testing.assert_array_equal(out[:, 4:8], target)
    np.testing.assert_array_equal(out[:, 8:], target)  # identity matching warps target onto itself
    lines = draw_correspondences(query, target, np.eye(4), (2, 2), top_k=4)
    assert (lines != out).any()


def test_figure_from_the_alignment_leaves_the_training_pairs_alone():
    model = LbAModel(num_classes=5, depth=18, width=8, num_identities=3, num_instances=2, seed=1)
    model.build_for(32, 16)
    images = tf.random.stateless_normal([12, 32, 16, 3], seed=[0, 1])
    state = model.alignment.seed_state.numpy().copy()
    figure = correspondence_figure(model, images)
    assert figure.shape == (1, 32, 48, 3) and figure.dtype == np.uint8
    np.testing.assert_array_equal(model.alignment.seed_state.numpy(), state)
    baseline = LbAModel(num_classes=5, depth=18, width=8, method="baseline").build_for(32, 16)
    assert correspondence_figure(baseline, images) is None
