"""IdentitySampler: identity-major P x K cross-modal batches, epoch length, determinism, resume."""

import re

import numpy as np
import pytest

from lba_tf.data.errors import DataError
from lba_tf.data.records import ImageRecord
from lba_tf.data.sampler import IdentitySampler


def _records(counts):
    """Records from ``{label: (num_visible, num_infrared)}``, modalities interleaved."""
    records = []
    for label, (n_rgb, n_ir) in counts.items():
        records += [ImageRecord(f"rgb/{label}_{i}.jpg", 100 + label, 1, "visible", label) for i in range(n_rgb)]
        records += [ImageRecord(f"ir/{label}_{i}.jpg", 100 + label, 3, "infrared", label) for i in range(n_ir)]
    order = np.random.default_rng(0).permutation(len(records))
    return [records[i] for i in order]


@pytest.fixture(scope="module")
def sampler():
    counts = {label: (1 + label % 5, 1 + (label * 7) % 4) for label in range(12)}
    return IdentitySampler(_records(counts), num_identities=5, num_instances=3, seed=11)


def test_batches_are_identity_major_with_distinct_identities_and_right_modalities(sampler):
    p, k = 5, 3
    for epoch in range(3):
        for rgb, ir in sampler.epoch(epoch):
            assert rgb.shape == ir.shape == (p * k,)
            assert all(sampler.records[i].modality == "visible" for i in rgb)
            assert all(sampler.records[i].modality == "infrared" for i in ir)
            rgb_ids = sampler.labels[rgb].reshape(p, k)
            ir_ids = sampler.labels[ir].reshape(p, k)
            np.testing.assert_array_equal(rgb_ids, ir_ids)  # sample i of both halves: identity i // K
            assert (rgb_ids == rgb_ids[:, :1]).all()
            assert len(set(rgb_ids[:, 0])) == p


def test_labels_come_from_the_records(sampler):
    rgb, ir = sampler.batch_indices(0, 0)
    rows = np.concatenate([rgb, ir])
    assert [sampler.records[i].label for i in rows] == sampler.labels[rows].tolist()
    assert sampler.batch_size == 30 and sampler.images_per_modality == 15


def test_steps_per_epoch_uses_the_larger_modality(sampler):
    num_rgb = sum(1 + label % 5 for label in range(12))  # 12 + 2 * 10 + 1 = 33
    num_ir = sum(1 + (label * 7) % 4 for label in range(12))  # 12 + 3 * 6 = 30
    assert (sampler.num_visible, sampler.num_infrared) == (num_rgb, num_ir) == (33, 30)
    assert sampler.steps_per_epoch == len(sampler) == 33 // 15 + 1 == 3
    assert len(list(sampler.epoch(0))) == 3


def test_steps_per_epoch_for_sysu_mm01_counts():
    # 395 identities, 22,258 visible and 11,909 infrared training images -> floor(22258 / 32) + 1,
    # the authors' sampler's int(N / (P * K)) + 1 batches
    rgb = np.full(395, 22258 // 395)
    rgb[: 22258 % 395] += 1
    ir = np.full(395, 11909 // 395)
    ir[: 11909 % 395] += 1
    counts = {label: (int(rgb[label]), int(ir[label])) for label in range(395)}
    sampler = IdentitySampler(_records(counts), num_identities=8, num_instances=4)
    assert (sampler.num_visible, sampler.num_infrared) == (22258, 11909)
    assert sampler.steps_per_epoch == 696


def test_steps_per_epoch_for_regdb_counts():
    # 206 identities x 10 visible and 10 thermal images -> int(2060 / 32) + 1
    sampler = IdentitySampler(_records({label: (10, 10) for label in range(206)}), 8, 4)
    assert sampler.steps_per_epoch == 65


def test_steps_per_epoch_override_and_minimum_of_one():
    records = _records({0: (1, 1), 1: (1, 1)})
    assert IdentitySampler(records, 2, 4).steps_per_epoch == 1  # floor(2 / 8) + 1
    assert IdentitySampler(records, 2, 4, steps_per_epoch=7).steps_per_epoch == 7


def test_same_seed_same_batches_other_seed_or_stream_other_batches(sampler):
    again = IdentitySampler(sampler.records, 5, 3, seed=11)
    other = IdentitySampler(sampler.records, 5, 3, seed=12)
    for step in range(2):
        for a, b in zip(sampler.batch_indices(4, step), again.batch_indices(4, step)):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sampler.batch_indices(4, 0)[0], other.batch_indices(4, 0)[0])
    assert not np.array_equal(sampler.batch_indices(4, 0)[0], sampler.batch_indices(4, 0, stream=1)[0])
    assert not np.array_equal(sampler.batch_indices(4, 0)[0], sampler.batch_indices(5, 0)[0])


def test_resume_mid_epoch_reproduces_the_remaining_batches():
    records = _records({label: (6, 4) for label in range(10)})
    full = IdentitySampler(records, 4, 2, seed=3)
    assert full.steps_per_epoch == 60 // 8 + 1 == 8
    from_start = list(full.epoch(2))
    resumed = list(IdentitySampler(records, 4, 2, seed=3).epoch(2, start_step=4))
    assert len(resumed) == 4
    for (a_rgb, a_ir), (b_rgb, b_ir) in zip(from_start[4:], resumed):
        np.testing.assert_array_equal(a_rgb, b_rgb)
        np.testing.assert_array_equal(a_ir, b_ir)


def test_identities_uniform_and_images_drawn_with_replacement():
    # 10 identities, P = 2: each identity is in a batch with probability 0.2; over 3000 batches
    # the count is Binomial(3000, 0.2): mean 600, std 21.9; 5 std = 110
    records = _records({label: (3, 2) for label in range(10)})
    sampler = IdentitySampler(records, 2, 4, seed=0, steps_per_epoch=3000)
    seen_ids = np.zeros(10, int)
    duplicates = 0
    used = set()
    for rgb, ir in sampler.epoch(0):
        seen_ids[np.unique(sampler.labels[rgb])] += 1
        duplicates += len(rgb) - len(np.unique(rgb))  # K = 4 > 3 images: with replacement
        used.update(rgb.tolist() + ir.tolist())
    assert np.abs(seen_ids - 600).max() < 110
    assert duplicates > 0
    assert used == set(range(len(records)))


def test_rejects_identity_missing_from_a_modality_naming_its_pid_and_the_modality():
    records = _records({0: (2, 2), 1: (2, 0), 2: (1, 1)})
    with pytest.raises(DataError) as error:
        IdentitySampler(records, 2, 2)
    assert str(error.value) == (
        "no infrared image among the training records for identity 101 (label 1); every identity of a batch "
        "needs K images of each modality: add infrared images or leave it out of the training set"
    )
    with pytest.raises(
        DataError,
        match=re.escape("no visible image among the training records for identities 100 (label 0), 102 (label 2);"),
    ):
        IdentitySampler(_records({0: (0, 2), 1: (2, 1), 2: (0, 1)}), 2, 2)


def test_rejects_more_identities_per_batch_than_exist():
    with pytest.raises(DataError) as error:
        IdentitySampler(_records({i: (1, 1) for i in range(3)}), 4, 2)
    assert str(error.value) == (
        "P=4 identities per batch (data.num_identities) but the training records hold only 3 identities: "
        "set data.num_identities to at most 3"
    )
    assert IdentitySampler(_records({i: (1, 1) for i in range(3)}), 3, 2).identities.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "bad",
    [
        dict(num_identities=0, num_instances=2),
        dict(num_identities=2, num_instances=0),
        dict(num_identities=2, num_instances=2, steps_per_epoch=0),
    ],
)
def test_rejects_nonpositive_sizes(bad):
    with pytest.raises(ValueError):
        IdentitySampler(_records({i: (1, 1) for i in range(3)}), **bad)


def test_rejects_unlabelled_and_empty_records():
    records = _records({0: (1, 1), 1: (1, 1)}) + [ImageRecord("q.jpg", 5, 1, "visible")]
    with pytest.raises(DataError, match="no training label"):
        IdentitySampler(records, 2, 1)
    with pytest.raises(DataError, match="no training records"):
        IdentitySampler([], 2, 1)


def test_step_out_of_range_is_an_error(sampler):
    with pytest.raises(ValueError, match="0 <= step < 3"):
        sampler.batch_indices(0, 3)
