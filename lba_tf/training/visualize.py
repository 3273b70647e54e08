"""Pictures of the learned correspondences for TensorBoard, like the paper's figures."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from lba_tf.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from lba_tf.evaluation.ranked_lists import enlargement
from lba_tf.models.alignment import sample_alignment_pairs
from lba_tf.models.lba import LbAModel

MIN_HEIGHT = 256
"""Panels shorter than this (the demo trains at 64 x 32) are drawn enlarged to at least this height."""


def _grid_centres(grid_h: int, grid_w: int, height: int, width: int) -> np.ndarray:
    """Pixel centres ``[grid_h * grid_w, 2]`` (x, y) of the feature cells, row-major."""
    ys = (np.arange(grid_h) + 0.5) * height / grid_h
    xs = (np.arange(grid_w) + 0.5) * width / grid_w
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def warp_image(target: np.ndarray, matching: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Warp ``target`` onto the query's grid with the soft matching, at feature resolution.

    Args:
        target: uint8 ``[H, W, 3]``, the image the query was matched to.
        matching: ``[h*w, h*w]`` matching probability (rows: query cells, columns: target cells).
        grid: the feature map size ``(h, w)``.

    Returns:
        uint8 ``[H, W, 3]``: each query cell painted with the probability-weighted mean colour
        of the target cells, upsampled with nearest neighbours.
    """
    h, w = grid
    height, width = target.shape[:2]
    cells = np.asarray(Image.fromarray(target).resize((w, h), Image.BOX), np.float64).reshape(h * w, 3)
    warped = (np.asarray(matching, np.float64) @ cells).reshape(h, w, 3)
    warped = np.clip(np.round(warped), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(warped).resize((width, height), Image.NEAREST))


def draw_correspondences(
    query: np.ndarray,
    target: np.ndarray,
    matching: np.ndarray,
    grid: tuple[int, int],
    top_k: int = 12,
    min_height: int = MIN_HEIGHT,
) -> np.ndarray:
    """The query and target side by side with the ``top_k`` strongest matches drawn as lines,
    and the target warped onto the query's grid as a third panel.

    Images shorter than ``min_height`` are enlarged by the least whole factor ``f`` that makes
    them at least that tall, each pixel repeated as an ``f x f`` block (the pixels the model saw),
    and the lines are drawn at that scale.

    Args:
        query: uint8 ``[H, W, 3]`` (e.g. the RGB image).
        target: uint8 ``[H, W, 3]`` (e.g. its positive IR image).
        matching: ``[h*w, h*w]`` matching probability from query cells to target cells.
        grid: the feature map size ``(h, w)``.
        top_k: how many query cells (those with the most confident match) get a line.
        min_height: see above; 1 draws at the images' own size.

    Returns:
        uint8 ``[f H, 3 f W, 3]``.
    """
    matching = np.asarray(matching, np.float64)
    factor = enlargement(query.shape[0], min_height)
    panels = [query, target, warp_image(target, matching, grid)]
    panels = [np.repeat(np.repeat(panel, factor, axis=0), factor, axis=1) for panel in panels]
    height, width = panels[0].shape[:2]
    canvas = Image.fromarray(np.concatenate(panels, axis=1))
    centres = _grid_centres(*grid, height, width)
    best = matching.argmax(axis=1)
    strength = matching.max(axis=1)
    line = max(1, factor // 2)
    radius = 1.5 * line
    draw = ImageDraw.Draw(canvas)
    for rank, cell in enumerate(np.argsort(-strength, kind="stable")[:top_k]):
        hue = rank / max(top_k, 1)
        colour = tuple(int(255 * c) for c in (1 - hue, hue, 0.5))
        (x0, y0), (x1, y1) = centres[cell], centres[best[cell]]
        draw.line([(x0, y0), (x1 + width, y1)], fill=colour, width=line)
        draw.ellipse([x0 - radius, y0 - radius, x0 + radius, y0 + radius], outline=colour, width=line)
    return np.asarray(canvas)


def _denormalize(images: np.ndarray) -> np.ndarray:
    pixels = (images * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def correspondence_figure(model: LbAModel, images: tf.Tensor) -> np.ndarray | None:
    """RGB image 0 of a batch, its positive IR partner, their strongest layer4 matches and the
    partner warped onto it (``[1, f H, 3 f W, 3]`` uint8, enlarged as :func:`draw_correspondences`
    does), or None for the baseline."""
    if model.alignment is None:
        return None
    half = int(images.shape[0]) // 2
    feats = model.encoder.forward_pair(images[:half], images[half:], training=False)
    # fixed pairs: drawing from the layer's generator would shift the training pairs after it
    pairs = sample_alignment_pairs(model.num_identities, model.num_instances, tf.constant([0, 0]))
    out = model.alignment(feats["layer4"], pairs=pairs, training=False)
    pos = int(out["pairs"][0][0])
    grid = tuple(int(d) for d in feats["layer4"].shape[1:3])
    pixels = _denormalize(images.numpy())
    panel = draw_correspondences(pixels[0], pixels[pos], out["matching"][0].numpy(), grid)
    return panel[None]
