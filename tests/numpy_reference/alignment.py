"""CMAlign and its dense triplet loss in float64 NumPy, written position by position.

Arrays are channels-last like the package: feature maps ``[N, H, W, C]``, masks ``[N, H, W]``.
"""

import numpy as np


def minmax(values):
    """Per image ``(v - min) / (max - min + 1e-12)``."""
    out = np.empty_like(values, dtype=np.float64)
    for n in range(values.shape[0]):
        low, high = values[n].min(), values[n].max()
        out[n] = (values[n] - low) / (high - low + 1e-12)
    return out


def foreground_mask(features):
    """Channel L2 norm at every position, min-max normalised per image."""
    n_images, h, w, _ = features.shape
    norms = np.empty((n_images, h, w))
    for n in range(n_images):
        for i in range(h):
            for j in range(w):
                norms[n, i, j] = np.sqrt(np.sum(features[n, i, j] ** 2))
    return minmax(norms)


def matching_probability(query, target, temperature):
    """``P[p, :] = softmax(tau * cos(q(p), k(:)))`` for one image pair ``[H, W, C]``."""
    q = query.reshape(-1, query.shape[-1])
    k = target.reshape(-1, target.shape[-1])
    q_unit = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    k_unit = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    probability = np.empty((q.shape[0], k.shape[0]))
    for p in range(q.shape[0]):
        similarity = k_unit @ q_unit[p]
        scaled = temperature * (similarity - similarity.max())
        probability[p] = np.exp(scaled) / np.exp(scaled).sum()
    return probability


def warp(probability, target):
    """``W(p) = sum_p' P[p, p'] * k(p')`` for one image pair."""
    h, w, c = target.shape
    k = target.reshape(-1, c)
    warped = np.zeros((h * w, c))
    for p in range(h * w):
        for p_target in range(h * w):
            warped[p] += probability[p, p_target] * k[p_target]
    return warped.reshape(h, w, c)


def pairwise_distance(x, y):
    """``||x - y + 1e-6||_2`` over the last axis."""
    return np.sqrt(np.sum((x - y + 1e-6) ** 2, axis=-1))


def dense_triplet_loss(anchor, positive, negative, comask, margin=0.3, reduction="paper"):
    """Both reductions of the spec, from the hinge map ``h[n, i, j]``."""
    n_images, h, w, _ = anchor.shape
    hinge = np.empty((n_images, h, w))
    for n in range(n_images):
        for i in range(h):
            for j in range(w):
                a, p, q = anchor[n, i, j], positive[n, i, j], negative[n, i, j]
                gap = pairwise_distance(a, p) - pairwise_distance(a, q)
                hinge[n, i, j] = max(0.0, margin + gap)
    if reduction == "paper":
        return float(np.mean(comask * hinge))
    # The released code's [N, 1, H, W] * [N, H, W] product, expanded to [N, N, H, W].
    total = 0.0
    for n_mask in range(n_images):
        for n_loss in range(n_images):
            total += np.sum(comask[n_mask] * hinge[n_loss])
    return total / (n_images * n_images * h * w)


def cross_modal_alignment(features, pos, neg, temperature=50.0, margin=0.3, reduction="paper"):
    """The whole CMAlign forward for given pairs.

    Returns:
        A dict with ``reconstruction`` (R+), ``reconstruction_neg`` (R-), ``matching`` (P+),
        ``mask``, ``comask`` and ``loss``.
    """
    features = np.asarray(features, dtype=np.float64)
    n_images, h, w, c = features.shape
    mask = foreground_mask(features)
    matching = np.empty((n_images, h * w, h * w))
    recon_pos = np.empty_like(features)
    recon_neg = np.empty_like(features)
    comask = np.empty((n_images, h, w))
    for n in range(n_images):
        m = mask[n][..., None]
        matching[n] = matching_probability(features[n], features[pos[n]], temperature)
        recon_pos[n] = m * warp(matching[n], features[pos[n]]) + (1 - m) * features[n]
        matching_neg = matching_probability(features[n], features[neg[n]], temperature)
        recon_neg[n] = m * warp(matching_neg, features[neg[n]]) + (1 - m) * features[n]
        transported = matching[n] @ mask[pos[n]].reshape(-1)
        comask[n] = mask[n] * transported.reshape(h, w)
    comask = minmax(comask)
    loss = dense_triplet_loss(features, recon_pos, recon_neg, comask, margin, reduction)
    return {
        "reconstruction": recon_pos,
        "reconstruction_neg": recon_neg,
        "matching": matching,
        "mask": mask,
        "comask": comask,
        "loss": loss,
    }
