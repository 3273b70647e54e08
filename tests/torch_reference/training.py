"""One LbA training step in PyTorch (full method), for the training parity test only.

Written from the method's contract with the released code's semantics: channels-first maps,
the dense triplet distance over channel axis 1 (torch 1.7.1's ``pairwise_distance``), its
``[N, 1, H, W] * [N, H, W]`` broadcasting reduction, open-reid's batch-hard triplet and
torch.optim.SGD with the recipe's two learning-rate groups. Also maps the reference's
state-dict keys to ``LbAModel`` variable paths, to compare and copy states between the two,
and measures how far the losses' discrete decisions (hardest pairs, hinges) are from
switching (``full_losses(..., margins=...)``).
"""

import numpy as np
import torch
from torch.nn import functional

from tests.torch_reference.resnet import gem

_BATCH_NORM_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                      "running_var": "moving_variance"}
_STEMS = {"visible_module.visible.": "encoder/visible_stem/",
          "thermal_module.thermal.": "encoder/infrared_stem/"}
_BODY = "base_resnet.base."
_DOWNSAMPLE = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}
TEMPERATURE = 50.0
MARGIN = 0.3
DENSE_TRIPLET_WEIGHT = 0.5


def _minmax(values):
    """Per image ``(v - min) / (max - min + 1e-12)`` over the positions of ``[N, L]``."""
    shifted = values - values.min(dim=1, keepdim=True)[0]
    return shifted / (shifted.max(dim=1, keepdim=True)[0] + 1e-12)


def _matching(query, target):
    """``softmax(tau * cos)`` of query positions over target positions, ``[N, L, L]``."""
    n, c = query.shape[:2]
    q = functional.normalize(query.reshape(n, c, -1), dim=1)
    k = functional.normalize(target.reshape(n, c, -1), dim=1)
    similarity = torch.bmm(q.transpose(1, 2), k)
    similarity = similarity - similarity.max(dim=-1, keepdim=True)[0]
    return torch.softmax(TEMPERATURE * similarity, dim=-1)


def _reconstruct(probability, target, mask, query):
    n, c, h, w = query.shape
    warped = torch.bmm(probability, target.reshape(n, c, -1).transpose(1, 2))
    warped = warped.transpose(1, 2).reshape(n, c, h, w)
    return mask * warped + (1.0 - mask) * query


def _smallest(margins, key, value):
    margins[key] = min(margins.get(key, float("inf")), float(value))


def cmalign(feat, pos, neg, margins=None, name="dense hinge"):
    """CMAlign on ``[N, C, H, W]`` maps with explicit pairs.

    With a ``margins`` dict, records under ``name`` how far the hinges are from switching: the
    smallest ``|margin + d+ - d-| / (margin + max(d+, d-))`` over the positions.

    Returns:
        ``(recon_pos, loss)``: the positive reconstruction ``[N, C, H, W]`` and the dense
        triplet loss with the released code's reduction.
    """
    n, _, h, w = feat.shape
    mask = _minmax(torch.norm(feat, dim=1).reshape(n, -1)).reshape(n, 1, h, w).detach()
    probability_pos = _matching(feat, feat[pos])
    recon_pos = _reconstruct(probability_pos, feat[pos], mask, feat)
    recon_neg = _reconstruct(_matching(feat, feat[neg]), feat[neg], mask, feat)
    transported = torch.bmm(probability_pos, mask[pos].reshape(n, -1, 1))
    comask = _minmax((mask.reshape(n, -1, 1) * transported).reshape(n, -1))
    comask = comask.reshape(n, 1, h, w).detach()
    # TripletMarginLoss(p=2, reduce=False) with the distance over axis 1 (channels)
    d_pos = torch.norm(feat - recon_pos + 1e-6, dim=1)
    d_neg = torch.norm(feat - recon_neg + 1e-6, dim=1)
    hinge = torch.clamp(MARGIN + d_pos - d_neg, min=0.0)
    if margins is not None:
        argument = (MARGIN + d_pos - d_neg).detach()
        scale = MARGIN + torch.maximum(d_pos, d_neg).detach()
        _smallest(margins, name, (argument.abs() / scale).min())
    return recon_pos, torch.mean(comask * hinge)  # [N,1,H,W] * [N,H,W] -> [N,N,H,W]


def batch_hard_triplet(features, labels, margins=None):
    """Hardest positive / negative per anchor, ``MarginRankingLoss(d_an, d_ap, 1)`` mean.

    With a ``margins`` dict, records how far the choices are from switching: the smallest gap
    between an anchor's hardest and next-hardest positive (negative) relative to the larger
    distance, and the smallest ``|d_ap - d_an + margin| / (margin + max(d_ap, d_an))``.
    """
    squared = features.pow(2).sum(dim=1, keepdim=True)
    distances = squared + squared.t() - 2.0 * features @ features.t()
    distances = distances.clamp(min=1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    if margins is not None:
        for row, mask in zip(distances.detach(), same):
            positives = torch.sort(row[mask], descending=True).values
            negatives = torch.sort(row[~mask]).values
            _smallest(margins, "hardest positive", (positives[0] - positives[1]) / positives[0])
            _smallest(margins, "hardest negative", (negatives[1] - negatives[0]) / negatives[1])
            _smallest(margins, "triplet hinge", abs(positives[0] - negatives[0] + MARGIN)
                      / (MARGIN + max(positives[0], negatives[0])))
    d_ap = torch.stack([row[mask].max() for row, mask in zip(distances, same)])
    d_an = torch.stack([row[~mask].min() for row, mask in zip(distances, same)])
    return torch.nn.MarginRankingLoss(margin=MARGIN)(d_an, d_ap, torch.ones_like(d_an))


def full_losses(reference, rgb, ir, labels, pairs3, pairs4, margins=None):
    """Every loss of one training step of an ``LbAReference`` in its current mode.

    The heads run in the released forward's order (IC3, IC4, then ID), which is the order in
    which the BNNeck's running statistics see the batches.

    Pass a dict as ``margins`` to have it filled with how far each kind of discrete decision
    of the losses is from switching, as a relative distance, the smallest over the batch:
    ``"hardest positive"``, ``"hardest negative"`` and ``"triplet hinge"`` (batch-hard
    triplet), ``"dense hinge layer3"`` and ``"dense hinge layer4"``. A float32 implementation
    decides each as the reference does when its error of the compared quantities is smaller.

    Args:
        reference: ``tests.torch_reference.lba.LbAReference``.
        rgb, ir: ``[PK, 3, H, W]`` halves of the batch.
        labels: int64 ``[2PK]``.
        pairs3, pairs4: ``(pos, neg)`` int64 ``[2PK]`` alignment targets of layer3 and layer4.

    Returns:
        ``{"id", "triplet", "ic3", "ic4", "dt3", "dt4", "total"}`` scalar tensors.
    """
    stems = (reference.visible_module.visible, reference.thermal_module.thermal)
    body = reference.base_resnet.base
    feats = body.body(torch.cat([stems[0].stem(rgb), stems[1].stem(ir)], dim=0))

    def head(feature_map):
        pooled = gem(feature_map)
        return pooled, reference.classifier(reference.bottleneck(pooled))

    cross_entropy = torch.nn.CrossEntropyLoss()
    recon3, dt3 = cmalign(feats["layer3"], *pairs3, margins=margins, name="dense hinge layer3")
    _, logits3 = head(body.layer4(recon3))
    recon4, dt4 = cmalign(feats["layer4"], *pairs4, margins=margins, name="dense hinge layer4")
    _, logits4 = head(recon4)
    pooled, logits = head(feats["layer4"])
    losses = {
        "id": cross_entropy(logits, labels),
        "triplet": batch_hard_triplet(pooled, labels, margins),
        "ic3": cross_entropy(logits3, labels),
        "ic4": cross_entropy(logits4, labels),
        "dt3": dt3,
        "dt4": dt4,
    }
    losses["total"] = (losses["id"] + losses["triplet"] + losses["ic3"] + losses["ic4"]
                       + DENSE_TRIPLET_WEIGHT * (losses["dt3"] + losses["dt4"]))
    return losses


def recipe_sgd(reference, lr, backbone_scale=0.1):
    """torch.optim.SGD of the recipe: BNNeck and classifier at ``lr``, the rest at
    ``backbone_scale * lr``; momentum 0.9, Nesterov, weight decay 5e-4 (the BNNeck shift has
    no gradient, so it neither moves nor decays)."""
    heads = list(reference.bottleneck.parameters()) + list(reference.classifier.parameters())
    head_ids = {id(p) for p in heads}
    backbone = [p for p in reference.parameters() if id(p) not in head_ids]
    return torch.optim.SGD(
        [{"params": backbone, "lr": backbone_scale * lr},
         {"params": list(reference.bottleneck.parameters()), "lr": lr},
         {"params": list(reference.classifier.parameters()), "lr": lr}],
        lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _layer_leaf(layer, leaf):
    kind = "kernel" if "conv" in layer else _BATCH_NORM_LEAVES[leaf]
    return f"{layer}/{kind}"


def keras_path(key):
    """The ``LbAModel`` variable path of an ``LbAReference`` state-dict key.

    ``None`` for the tensors that never run (the stems' layer1-4 and fc, the body's conv1 and
    bn1) and for BatchNorm batch counters.
    """
    module, leaf = key.rsplit(".", 1)
    if leaf == "num_batches_tracked":
        return None
    for prefix, target in _STEMS.items():
        if key.startswith(prefix):
            local = module[len(prefix):]
            return target + _layer_leaf(local, leaf) if local in ("conv1", "bn1") else None
    if key.startswith(_BODY + "layer"):
        stage, block, *layer = module[len(_BODY):].split(".")
        layer = _DOWNSAMPLE.get(".".join(layer), ".".join(layer))
        return f"encoder/body/{stage}/block{block}/" + _layer_leaf(layer, leaf)
    if module == "bottleneck":
        return "bnneck/batch_norm/" + _BATCH_NORM_LEAVES[leaf]
    if key == "classifier.weight":
        return "classifier/kernel"
    return None


def _to_keras(array):
    """OIHW conv kernels to HWIO, ``[out, in]`` dense kernels to ``[in, out]``."""
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    return array.T if array.ndim == 2 else array


def _from_keras(array):
    if array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
    return array.T if array.ndim == 2 else array


def keras_state(reference):
    """A copy, ``{keras path: float64 array in Keras layout}``, of every tensor the model runs."""
    state = {}
    for key, value in reference.state_dict().items():
        path = keras_path(key)
        if path is not None:
            state[path] = _to_keras(value.detach().cpu().double().numpy()).copy()
    return state


@torch.no_grad()
def load_keras_state_(reference, state):
    """Overwrite the reference's weights and running statistics with ``{keras path: array}``."""
    for key, value in reference.state_dict().items():
        path = keras_path(key)
        if path is not None:
            value.copy_(torch.from_numpy(np.ascontiguousarray(_from_keras(state[path]))))
    return reference


def momentum_buffers(reference, optimizer):
    """A copy, ``{keras path: float64 array}``, of torch.optim.SGD's momentum buffers."""
    buffers = {}
    for key, parameter in reference.named_parameters():
        buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
        if buffer is not None:
            buffers[keras_path(key)] = _to_keras(buffer.double().numpy()).copy()
    return buffers
