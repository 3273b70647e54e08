"""CMAlign: pair sampling invariants, parity with the float64 NumPy statement of the spec and with
torch (its outputs and the dense triplet loss computed from them), XLA versus plain execution,
gradients, seeding and configuration."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.losses.dense_triplet import dense_triplet_loss
from lba_tf.models.alignment import (
    CrossModalAlignment,
    foreground_mask,
    sample_alignment_pairs,
)
from tests.models.harness import run_config_round_trip_test
from tests.numpy_reference import alignment as reference

P, K = 3, 2  # N = 2PK = 12 images: small, and P - 1 >= K.
N = 2 * P * K
PAIR_SEED = [7, 11]


def _features(seed, h, w, c, n=N):
    """Post-ReLU maps whose magnitude varies over positions, like a backbone's activations."""
    rng = np.random.default_rng(seed)
    activations = np.maximum(rng.normal(size=(n, h, w, c)), 0.0)
    return (activations * rng.uniform(0.2, 4.0, size=(n, h, w, 1))).astype(np.float32)


def _fixed_pairs():
    pos, neg = sample_alignment_pairs(P, K, tf.constant(PAIR_SEED))
    return pos.numpy(), neg.numpy()


def _dense_triplet(out, reduction="paper"):
    """The dense triplet loss of the layer's outputs, computed as the model composes it."""
    return dense_triplet_loss(
        out["query"],
        out["reconstruction_pos"],
        out["reconstruction_neg"],
        out["comask"],
        reduction=reduction,
    )


def _relative_error(got, expected):
    """``max |got - expected| / max |expected|``."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return np.max(np.abs(got - expected)) / np.max(np.abs(expected))


def _identity(index, p, k):
    return (index % (p * k)) // k


def _modality(index, p, k):
    return index // (p * k)


# ---------------------------------------------------------------------------- foreground mask


def test_foreground_mask_on_tiny_map():
    # Channel norms 5, 0, 1 -> (v - 0) / (5 - 0 + 1e-12).
    features = tf.constant([[[[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]]])
    np.testing.assert_allclose(foreground_mask(features).numpy(), [[[1.0, 0.0, 0.2]]], rtol=1e-6)


def test_foreground_mask_of_constant_norms_is_zero():
    # max - min = 0, so the 1e-12 in the denominator gives 0 rather than NaN.
    features = tf.constant([[[[3.0, 4.0], [0.0, 5.0]], [[5.0, 0.0], [4.0, 3.0]]]])
    np.testing.assert_array_equal(foreground_mask(features).numpy(), np.zeros([1, 2, 2]))


# ------------------------------------------------------------------------------ pair sampling


@pytest.mark.parametrize("p,k", [(8, 4), (5, 2)])
def test_pair_invariants_over_many_draws(p, k):
    sample = tf.function(lambda seed: sample_alignment_pairs(p, k, seed))
    queries = np.arange(2 * p * k)
    for draw in range(200):
        pos, neg = (x.numpy() for x in sample(tf.constant([draw, 3])))
        assert pos.dtype == np.int32 and pos.shape == neg.shape == (2 * p * k,)
        # Other modality: RGB queries (first half) target IR images and vice versa.
        assert np.all(_modality(pos, p, k) == 1 - _modality(queries, p, k))
        assert np.all(_modality(neg, p, k) == 1 - _modality(queries, p, k))
        assert np.all(_identity(pos, p, k) == _identity(queries, p, k))
        assert np.all(_identity(neg, p, k) != _identity(queries, p, k))
        for block in range(2 * p):
            rows = slice(block * k, (block + 1) * k)
            # Positives: a permutation of the identity's K images in the other modality.
            assert sorted(pos[rows] % k) == list(range(k))
            # Negatives: K distinct identities, positions a permutation of 0..K-1.
            assert len(set(_identity(neg[rows], p, k))) == k
            assert sorted(neg[rows] % k) == list(range(k))


def test_negative_identities_cover_the_others_evenly():
    p, k = 5, 2
    sample = tf.function(lambda seed: sample_alignment_pairs(p, k, seed))
    counts = np.zeros(p, int)
    for draw in range(200):
        _, neg = sample(tf.constant([draw, 5]))
        counts += np.bincount(_identity(neg.numpy()[:k], p, k), minlength=p)
    # Identity 0's RGB queries pick 2 of the 4 others per draw: 100 expected each.
    assert counts[0] == 0
    assert np.all((counts[1:] > 60) & (counts[1:] < 140)), counts


def test_same_seed_gives_same_pairs_and_other_seeds_differ():
    first = [x.numpy() for x in sample_alignment_pairs(8, 4, tf.constant([1, 2]))]
    again = [x.numpy() for x in sample_alignment_pairs(8, 4, tf.constant([1, 2]))]
    other = [x.numpy() for x in sample_alignment_pairs(8, 4, tf.constant([1, 3]))]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_too_few_identities_for_distinct_negatives_raise():
    with pytest.raises(ValueError, match="num_identities - 1 >= num_instances"):
        sample_alignment_pairs(4, 4, tf.constant([0, 0]))
    with pytest.raises(ValueError, match="num_identities - 1 >= num_instances"):
        CrossModalAlignment(num_identities=2, num_instances=2)


# ------------------------------------------------------------------ parity with the reference


@pytest.fixture(scope="module", params=[(6, 3, 32), (18, 9, 4)], ids=["6x3x32", "18x9x4"])
def case(request):
    h, w, c = request.param
    features = _features(seed=h * w + c, h=h, w=w, c=c)
    pos, neg = _fixed_pairs()
    expected = reference.cross_modal_alignment(features.astype(np.float64), pos, neg)
    return features, (pos, neg), expected


@pytest.mark.parametrize("reduction", ["paper", "official"])
def test_matches_numpy_reference(case, reduction):
    features, pairs, expected = case
    layer = CrossModalAlignment(P, K)
    out = layer(tf.constant(features), pairs=tuple(tf.constant(x) for x in pairs))
    loss = _dense_triplet(out, reduction)
    expected_loss = reference.dense_triplet_loss(
        features.astype(np.float64),
        expected["reconstruction"],
        expected["reconstruction_neg"],
        expected["comask"],
        reduction=reduction,
    )
    assert expected_loss > 0.0
    assert _relative_error(out["reconstruction"], expected["reconstruction"]) < 1e-5
    assert _relative_error(out["matching"], expected["matching"]) < 1e-5
    assert _relative_error(out["comask"], expected["comask"]) < 1e-5
    assert _relative_error(loss, expected_loss) < 1e-5
    # tau = 50 makes the matching sharp on these maps: rows are far from uniform.
    assert np.mean(np.max(expected["matching"], axis=-1)) > 10.0 / expected["matching"].shape[-1]


def test_xla_and_plain_execution_agree():
    features = tf.constant(_features(seed=1, h=18, w=9, c=8))
    pairs = tuple(tf.constant(x) for x in _fixed_pairs())
    compiled = CrossModalAlignment(P, K, jit_compile=True)(features, pairs=pairs)
    plain = CrossModalAlignment(P, K, jit_compile=False)(features, pairs=pairs)
    for key in ("reconstruction", "reconstruction_neg", "matching", "comask"):
        assert _relative_error(compiled[key], plain[key]) < 1e-5, key
    assert _relative_error(_dense_triplet(compiled), _dense_triplet(plain)) < 1e-5


@pytest.mark.torch
def test_official_reduction_matches_torch_forward():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    features = _features(seed=2, h=6, w=3, c=16)
    pos, neg = _fixed_pairs()
    feat = torch.from_numpy(features.transpose(0, 3, 1, 2)).double()  # NCHW as in torch
    n, c, h, w = feat.shape

    def minmax(values):
        values = values - values.min(dim=1, keepdim=True)[0]
        return values / (values.max(dim=1, keepdim=True)[0] + 1e-12)

    def matching(query, target):
        q = functional.normalize(query.reshape(n, c, -1), dim=1)
        k = functional.normalize(target.reshape(n, c, -1), dim=1)
        similarity = torch.bmm(q.transpose(1, 2), k)
        similarity = similarity - similarity.max(dim=-1, keepdim=True)[0]
        return torch.softmax(50.0 * similarity, dim=-1)

    def reconstruction(probability, target, mask):
        warped = torch.bmm(probability, target.reshape(n, c, -1).transpose(1, 2))
        warped = warped.transpose(1, 2).reshape(n, c, h, w)
        return mask * warped + (1.0 - mask) * feat

    mask = minmax(torch.norm(feat, dim=1).reshape(n, -1)).reshape(n, 1, h, w)
    probability_pos = matching(feat, feat[pos])
    probability_neg = matching(feat, feat[neg])
    recon_pos = reconstruction(probability_pos, feat[pos], mask)
    recon_neg = reconstruction(probability_neg, feat[neg], mask)
    comask = mask.reshape(n, -1, 1) * torch.bmm(probability_pos, mask[pos].reshape(n, -1, 1))
    comask = minmax(comask.reshape(n, -1)).reshape(n, 1, h, w)
    d_pos = torch.norm(feat - recon_pos + 1e-6, dim=1)
    d_neg = torch.norm(feat - recon_neg + 1e-6, dim=1)
    hinge = torch.clamp(0.3 + d_pos - d_neg, min=0.0)
    expected_loss = torch.mean(comask * hinge).item()  # [N,1,H,W] * [N,H,W] -> [N,N,H,W]

    out = CrossModalAlignment(P, K)(tf.constant(features), pairs=(tf.constant(pos), tf.constant(neg)))
    assert _relative_error(_dense_triplet(out, "official"), expected_loss) < 1e-5
    expected_recon = recon_pos.numpy().transpose(0, 2, 3, 1)
    assert _relative_error(out["reconstruction"], expected_recon) < 1e-5
    assert _relative_error(out["comask"], comask[:, 0].numpy()) < 1e-5


# --------------------------------------------------------------------------------- gradients


def test_loss_and_reconstruction_have_finite_nonzero_gradients():
    features = tf.constant(_features(seed=3, h=6, w=3, c=8))
    pairs = tuple(tf.constant(x) for x in _fixed_pairs())
    weights = tf.random.stateless_normal(features.shape, seed=[0, 1])
    layer = CrossModalAlignment(P, K)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        out = layer(features, pairs=pairs)
        loss = _dense_triplet(out)
        projected = tf.reduce_sum(out["reconstruction"] * weights)
    for target in (loss, projected):
        gradient = tape.gradient(target, features).numpy()
        assert np.all(np.isfinite(gradient)) and np.any(gradient != 0.0)


def test_mask_and_comask_carry_no_gradient():
    features = tf.constant(_features(seed=4, h=6, w=3, c=8))
    pairs = tuple(tf.constant(x) for x in _fixed_pairs())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        comask_only = tf.reduce_sum(CrossModalAlignment(P, K)(features, pairs=pairs)["comask"])
        mask_only = tf.reduce_sum(foreground_mask(features))
    assert tape.gradient(comask_only, features) is None
    assert tape.gradient(mask_only, features) is None


# ------------------------------------------------------------------- seeding, dtypes, config


def test_every_call_draws_fresh_pairs_and_checkpoints_restore_the_sampler(tmp_path):
    features = tf.constant(_features(seed=5, h=2, w=1, c=4))
    layer = CrossModalAlignment(P, K, seed=3)
    twin = CrossModalAlignment(P, K, seed=3)
    first, second = (np.stack(layer(features)["pairs"]) for _ in range(2))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.stack(twin(features)["pairs"]), first)

    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    restored = CrossModalAlignment(P, K, seed=99)
    tf.train.Checkpoint(layer=restored).restore(path).assert_consumed()
    copied = CrossModalAlignment(P, K, seed=98)
    copied.set_weights(layer.get_weights())
    expected = np.stack(layer(features)["pairs"])
    np.testing.assert_array_equal(np.stack(restored(features)["pairs"]), expected)
    np.testing.assert_array_equal(np.stack(copied(features)["pairs"]), expected)


def test_fresh_pairs_inside_tf_function():
    features = tf.constant(_features(seed=6, h=2, w=1, c=4))
    layer = CrossModalAlignment(P, K, seed=0)
    step = tf.function(lambda x: layer(x)["pairs"])
    first, second = (np.stack(step(features)) for _ in range(2))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("policy,dtype", [("mixed_float16", tf.float16), ("mixed_bfloat16", tf.bfloat16)])
def test_mixed_precision_computes_in_float32(policy, dtype):
    features = tf.cast(tf.constant(_features(seed=7, h=6, w=3, c=8)), dtype)
    pairs = tuple(tf.constant(x) for x in _fixed_pairs())
    mixed = CrossModalAlignment(P, K, dtype=policy)(features, pairs=pairs)
    full = CrossModalAlignment(P, K)(tf.cast(features, tf.float32), pairs=pairs)
    mixed_loss = _dense_triplet(mixed)
    assert mixed["reconstruction"].dtype == dtype
    assert mixed_loss.dtype == mixed["matching"].dtype == mixed["comask"].dtype == tf.float32
    for key in ("query", "reconstruction_pos", "reconstruction_neg"):
        assert mixed[key].dtype == tf.float32, key
    np.testing.assert_allclose(mixed_loss.numpy(), _dense_triplet(full).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(mixed["reconstruction"].numpy(), tf.cast(full["reconstruction"], dtype).numpy())


def test_get_config_round_trip():
    layer = CrossModalAlignment(8, 4, temperature=20.0, jit_compile=False, seed=5, name="cmalign3")
    clone = run_config_round_trip_test(layer)
    assert (clone.temperature, clone.jit_compile, clone.seed) == (20.0, False, 5)


def test_outputs_are_correspondences_and_reconstructions_not_a_loss():
    features = tf.constant(_features(seed=8, h=6, w=3, c=8))
    pairs = tuple(tf.constant(x) for x in _fixed_pairs())
    out = CrossModalAlignment(P, K)(features, pairs=pairs)
    assert set(out) == {
        "reconstruction",
        "query",
        "reconstruction_pos",
        "reconstruction_neg",
        "matching",
        "comask",
        "pairs",
    }
    np.testing.assert_array_equal(out["query"], features)
    np.testing.assert_array_equal(out["reconstruction"], out["reconstruction_pos"])
    np.testing.assert_array_equal(np.stack(out["pairs"]), np.stack(pairs))
