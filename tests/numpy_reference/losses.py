"""Batch-hard triplet and identity losses in float64 NumPy, anchor by anchor."""

import numpy as np


def batch_hard_triplet(features, labels, margin=0.3):
    """Returns ``(loss, d_ap, d_an)`` with the spec's clamped Euclidean distance."""
    features = np.asarray(features, dtype=np.float64)
    n = features.shape[0]
    distance = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a, b = features[i], features[j]
            squared = a @ a + b @ b - 2 * a @ b
            distance[i, j] = np.sqrt(max(squared, 1e-12))
    d_ap = np.empty(n)
    d_an = np.empty(n)
    for i in range(n):
        d_ap[i] = max(distance[i, j] for j in range(n) if labels[j] == labels[i])
        d_an[i] = min(distance[i, j] for j in range(n) if labels[j] != labels[i])
    loss = np.mean([max(0.0, d_ap[i] - d_an[i] + margin) for i in range(n)])
    return float(loss), d_ap, d_an


def identity_loss(logits, labels):
    """Mean of ``logsumexp(z) - z[label]``."""
    logits = np.asarray(logits, dtype=np.float64)
    total = 0.0
    for z, label in zip(logits, labels):
        top = z.max()
        total += top + np.log(np.sum(np.exp(z - top))) - z[label]
    return total / len(labels)
