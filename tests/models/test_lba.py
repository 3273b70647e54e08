"""The LbA model: loss composition, gradients, explicit pairs, embeddings, config and .keras round
trips."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import load_config
from lba_tf.losses.dense_triplet import dense_triplet_loss
from lba_tf.losses.identity import identity_loss
from lba_tf.losses.triplet import batch_hard_triplet_loss
from lba_tf.models.alignment import sample_alignment_pairs
from lba_tf.models.lba import LOSS_NAMES, LbAModel, build_model
from tests.models.harness import run_config_round_trip_test, run_keras_file_test

P, K, H, W = 3, 2, 48, 24


def _model(method="full", **kw):
    model = LbAModel(num_classes=7, depth=18, width=8, num_identities=P, num_instances=K, method=method, seed=3, **kw)
    return model.build_for(H, W)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.normal(size=(2 * P * K, H, W, 3)), tf.float32)
    ids = np.repeat(np.arange(P), K) + 2
    return images, tf.constant(np.concatenate([ids, ids]), tf.int32)


def _pairs(seed):
    return sample_alignment_pairs(P, K, tf.constant([seed, 1]))


def test_full_total_is_the_weighted_sum_of_its_parts():
    model = _model(id_consistency_weight=0.7, dense_triplet_weight=0.5)
    out = model.compute_losses(*_batch(), training=True)
    expected = out["id"] + out["triplet"] + 0.7 * (out["ic3"] + out["ic4"]) + 0.5 * (out["dt3"] + out["dt4"])
    np.testing.assert_allclose(out["total"].numpy(), expected.numpy(), rtol=1e-6)
    for name in ("id", "triplet", "ic3", "ic4", "dt3", "dt4"):
        assert np.isfinite(out[name].numpy()) and out[name].numpy() > 0, name


def test_baseline_is_id_plus_triplet_from_the_pooled_feature():
    model = _model("baseline")
    images, labels = _batch()
    out = model.compute_losses(images, labels, training=False)
    assert set(out) >= {"id", "triplet", "total"} and "dt3" not in out
    np.testing.assert_allclose(out["total"].numpy(), (out["id"] + out["triplet"]).numpy(), rtol=1e-6)
    # recompute the parts from the model's own layers
    feats = model.encoder.forward_pair(images[: P * K], images[P * K :], training=False)
    pooled = model.pool(feats["layer4"])
    logits = model.classifier(model.bnneck(pooled, training=False))
    np.testing.assert_allclose(out["id"].numpy(), identity_loss(logits, labels).numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["triplet"].numpy(), batch_hard_triplet_loss(pooled, labels, 0.3).numpy(), rtol=1e-5)


def test_explicit_pairs_make_the_losses_deterministic():
    model = _model()
    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    a = model.compute_losses(images, labels, training=False, pairs=pairs)
    b = model.compute_losses(images, labels, training=False, pairs=pairs)
    for name in ("dt3", "dt4", "ic3", "ic4"):
        assert a[name].numpy() == b[name].numpy()
    c = model.compute_losses(images, labels, training=False, pairs={"layer3": _pairs(5), "layer4": _pairs(6)})
    assert c["dt4"].numpy() != a["dt4"].numpy()


def test_ic3_passes_the_layer3_reconstruction_through_layer4():
    model = _model()
    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    out = model.compute_losses(images, labels, training=False, pairs=pairs)
    feats = model.encoder.forward_pair(images[: P * K], images[P * K :], training=False)
    recon3 = model.alignment(feats["layer3"], pairs=pairs["layer3"])["reconstruction"]
    logits3 = model.classifier(
        model.bnneck(model.pool(model.encoder.body.layer4(recon3, training=False)), training=False)
    )
    np.testing.assert_allclose(out["ic3"].numpy(), identity_loss(logits3, labels).numpy(), rtol=1e-5)


def test_dense_triplet_losses_come_from_the_alignment_outputs():
    model = _model(dense_triplet_margin=0.2, dt_reduction="paper")
    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    out = model.compute_losses(images, labels, training=False, pairs=pairs)
    feats = model.encoder.forward_pair(images[: P * K], images[P * K :], training=False)
    for layer, name in (("layer3", "dt3"), ("layer4", "dt4")):
        aligned = model.alignment(feats[layer], pairs=pairs[layer])
        expected = dense_triplet_loss(
            feats[layer],
            aligned["reconstruction_pos"],
            aligned["reconstruction_neg"],
            aligned["comask"],
            margin=0.2,
            reduction="paper",
        )
        np.testing.assert_allclose(out[name].numpy(), expected.numpy(), rtol=1e-5)


def test_compute_losses_is_the_loss_terms_of_the_training_outputs():
    model = _model()
    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    outputs = model.training_outputs(images, training=False, pairs=pairs)
    assert set(outputs) == {"pooled", "logits", "alignment", "consistency_logits"}
    assert not any("loss" in key for key in outputs["alignment"]["layer4"])
    losses = model.loss_terms(outputs, labels)
    assert set(losses) == set(LOSS_NAMES)
    out = model.compute_losses(images, labels, training=False, pairs=pairs)
    assert set(out) == set(LOSS_NAMES) | {"logits", "pooled", "matching", "reconstruction"}
    for name in LOSS_NAMES:
        assert out[name].numpy() == losses[name].numpy(), name
    np.testing.assert_array_equal(out["matching"], outputs["alignment"]["layer4"]["matching"])
    baseline = _model("baseline")
    assert set(baseline.compute_losses(images, labels, training=False)) == {
        "id",
        "triplet",
        "total",
        "logits",
        "pooled",
    }


def test_every_trainable_variable_gets_a_finite_nonzero_gradient_in_full_mode():
    model = _model()
    images, labels = _batch()
    with tf.GradientTape() as tape:
        total = model.compute_losses(images, labels, training=True)["total"]
    grads = tape.gradient(total, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None, var.path
        g = tf.convert_to_tensor(grad).numpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0, var.path
    frozen = [v for v in model.weights if "bnneck" in v.path and "beta" in v.path]
    assert frozen and not any(v.trainable for v in frozen)


def test_embedding_is_unit_length_and_modality_specific():
    model = _model()
    images, _ = _batch()
    vis = model.embed(images[:4], tf.zeros([4], tf.int32)).numpy()
    ir = model.embed(images[:4], tf.ones([4], tf.int32)).numpy()
    np.testing.assert_allclose(np.linalg.norm(vis, axis=1), 1.0, rtol=1e-5)
    assert vis.shape == (4, 64) and np.abs(vis - ir).max() > 1e-4
    mixed = model((images[:4], tf.constant([0, 1, 0, 1]))).numpy()
    np.testing.assert_allclose(mixed[[0, 2]], vis[[0, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed[[1, 3]], ir[[1, 3]], rtol=1e-5, atol=1e-6)


def test_xla_and_plain_alignment_give_the_same_losses():
    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    xla = _model(jit_compile_alignment=True)
    plain = _model(jit_compile_alignment=False)
    plain.set_weights(xla.get_weights())
    a = xla.compute_losses(images, labels, training=False, pairs=pairs)
    b = plain.compute_losses(images, labels, training=False, pairs=pairs)
    for name in ("dt3", "dt4", "ic3", "ic4", "total"):
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    images, labels = _batch()
    modality = tf.constant([0, 1] * 6)
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}

    def outputs(m):
        losses = m.compute_losses(images, labels, training=False, pairs=pairs)
        return m.embed(images, modality), {name: losses[name] for name in LOSS_NAMES}

    run_keras_file_test(model, outputs, tmp_path)


def test_config_round_trip_keeps_the_loss_settings():
    model = LbAModel(
        num_classes=7,
        depth=18,
        width=8,
        num_identities=P,
        num_instances=K,
        temperature=20.0,
        dt_reduction="paper",
        triplet_margin=0.4,
        dense_triplet_margin=0.5,
        dense_triplet_weight=0.25,
        id_consistency_weight=2.0,
        jit_compile_alignment=False,
        seed=5,
    )
    clone = run_config_round_trip_test(model)
    assert (clone.dt_reduction, clone.dense_triplet_margin, clone.triplet_margin) == ("paper", 0.5, 0.4)
    assert (clone.dense_triplet_weight, clone.id_consistency_weight) == (0.25, 2.0)
    assert (clone.alignment.temperature, clone.alignment.jit_compile, clone.alignment.seed) == (20.0, False, 5)


def test_build_model_follows_the_config():
    cfg = load_config(
        None,
        ["model.method=baseline", "model.depth=34", "model.width=8", "data.image_height=32", "data.image_width=16"],
    )
    model = build_model(cfg, num_classes=5)
    assert model.method == "baseline" and model.alignment is None
    assert model.depth == 34
    assert tuple(model.classifier.kernel.shape) == (8 * 8, 5)  # BasicBlock layer4: 8 x width channels


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        LbAModel(num_classes=3, method="fancy")


@pytest.mark.parametrize("method", ["full", "baseline"])
def test_unknown_dense_triplet_reduction_is_rejected(method):
    with pytest.raises(ValueError, match="dt_reduction"):
        LbAModel(num_classes=3, method=method, dt_reduction="sum")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_forward_is_finite_and_close_to_float32(policy):
    import keras

    images, labels = _batch()
    pairs = {"layer3": _pairs(1), "layer4": _pairs(2)}
    reference = _model()
    expected = reference.compute_losses(images, labels, training=False, pairs=pairs)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = _model()
        model.set_weights(reference.get_weights())
        with tf.GradientTape() as tape:
            out = model.compute_losses(images, labels, training=False, pairs=pairs)
        grads = tape.gradient(out["total"], model.trainable_variables)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert out["total"].dtype == tf.float32 and out["pooled"].dtype == tf.float32
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
    # half-precision convolutions: agreement to a few percent, not to float32 rounding
    np.testing.assert_allclose(out["total"].numpy(), expected["total"].numpy(), rtol=0.05)
