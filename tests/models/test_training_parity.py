"""A whole LbA training step equals the PyTorch reference: every loss, then two SGD updates.

The reference (``tests/torch_reference/training.py``) runs in float64 from the same random
weights, the same batch and the same alignment pairs, in training mode (BatchNorm batch
statistics, running statistics updated), and steps torch.optim.SGD with the recipe's groups
(BNNeck and classifier at the base rate, the rest at 0.1x; momentum 0.9, Nesterov, coupled
weight decay 5e-4). The Keras side is ``LbAModel.compute_losses`` under a GradientTape and the
optimizer ``build_optimizer`` makes from the config. Two steps exercise the momentum buffers.

Each step starts both sides from the Keras model's state (weights and running statistics): the
float32 rounding of updated weights alone (~1e-7) can move a pre-activation of this random
network across zero and change a gradient by percents, which says nothing about either side.
The momentum buffers are each side's own, carried over from the first step.

The same holds within a step. The ~780,000 ReLU inputs of a step include some within 1e-7 of
zero (relative to their layer's largest), while a correct float32 forward pass is off by up to
~7e-6 there: any float32 implementation may take either side of a few kinks, each time
changing the gradient by that element's whole contribution, up to 8e-2 relative on the
variables of its block (a single ReLU input of layer2, 7e-8 from zero, decided the other way
is what made this test fail with oneDNN on this machine). No case of this size is free of
such ties, so the
reference takes the decisions of the Keras run (``tests.torch_reference.resnet.following``):
its ReLUs use the signs of the Keras ReLU inputs and its stems' max-pools the Keras windows'
winners, and the test checks that wherever the reference's own float64 values would decide
otherwise they are within float32 rounding of a tie. The losses' own decisions (hardest
pairs, hinges) are few and checked to be clear of ties by far more than float32 error.

Every tolerance below is derived from measurements of this case, in both kernel modes
(``TF_ENABLE_ONEDNN_OPTS=0`` and ``=1``) and from six starts (the imported weights, and the
imported weights moved by a random -1, 0 or +1 ulp each, which gives each run other roundings
and other ties): Keras float32 against the float64 reference, and an independent float32
implementation, the reference itself in float32 taking the same decisions, against float64.
The latter measures how much float32 rounding alone moves each quantity in this case; the
tests below hold it to the same tolerances, so that they are shown on every run to admit a
second correct float32 implementation. Each tolerance is also checked to fail a wrong
implementation: momentum 0.89, weight decay 4.5e-4, dense triplet weight 0.45, ID-consistency
weight 0.95, triplet margin 0.29 or matching temperature 49 instead of the recipe's.
"""

import contextlib
import copy
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

from lba_tf.config import load_config  # noqa: E402
from lba_tf.models import resnet as keras_resnet  # noqa: E402
from lba_tf.models.alignment import sample_alignment_pairs  # noqa: E402
from lba_tf.models.lba import LbAModel  # noqa: E402
from lba_tf.tools.import_torch import assign_lba_checkpoint  # noqa: E402
from lba_tf.training.trainer import build_optimizer  # noqa: E402
from tests.torch_reference import training as reference_training  # noqa: E402
from tests.torch_reference.lba import LbAReference  # noqa: E402
from tests.torch_reference.parity import relative_error  # noqa: E402
from tests.torch_reference.resnet import (  # noqa: E402
    following,
    randomize_,
    shrink_residual_branches_,
)

pytestmark = pytest.mark.torch

DEPTH, WIDTH = 50, 8
P, K = 3, 2
H, W = 64, 32
NUM_CLASSES = 5
IDENTITIES = np.array([3, 0, 4])  # training labels of the batch's P identities
LR = 0.01
STEPS = 2
STEPS_PER_EPOCH = 10
COMPONENTS = ("id", "triplet", "ic3", "ic4", "dt3", "dt4", "total")
IMPLEMENTATIONS = ("keras", "torch_float32")

# Tolerances, each relative to the largest magnitude of the variable (or the loss) compared;
# float32's unit roundoff is u = 2**-24 = 6e-8. "Measured" is the largest error against the
# float64 reference over both kernel modes, six starts and both steps, for Keras and for the
# independent torch float32 run; "wrong" the smallest error of the wrong implementations of
# the module docstring (each tolerance is 5-10x the first and at least 5x below the second).
#
# Losses: measured Keras 2.6e-6, torch float32 3.3e-6 (~50 u: means over the batch of terms
# that partly cancel); wrong 1.4e-3 (dense triplet weight, on the total loss), 2.7e-3 (margin).
LOSS_RTOL = 2e-5
# Weights and running statistics after a step: float32 storage rounds them by u relative and
# a step moves them by less than 1e-3 of their size; measured Keras 1.0e-6, torch float32
# 1.0e-6 (the classifier kernel); wrong 5.4e-5 (dense triplet weight) to 6e-3 (the weight
# decay's 1.5e-6 is left to the updates and buffers).
WEIGHT_RTOL = 1e-5
# The change of a variable in a step, beyond the float32 resolution of the new weights (a
# weight near 1 updated by 1e-4 is seen only to 1e-3 of that update): measured Keras 1.2e-5,
# torch float32 1.2e-5 (~200 u: a gradient is a sum over the batch of terms that largely
# cancel); wrong 6.4e-4 (weight decay, first step).
UPDATE_RTOL = 1e-4
# Momentum buffers (the gradient plus weight decay, plus 0.9 x the first step's buffer in the
# second): measured Keras 1.7e-5, torch float32 1.9e-5; wrong 1.2e-3 (weight decay).
BUFFER_RTOL = 1e-4
# A ReLU input whose sign the Keras run saw otherwise may be at most this far from zero,
# relative to the largest input of its call: float32 forward errors there, measured as above,
# grow from 3e-7 (stems) to 6e-6 (Keras) and 7e-6 (torch float32) in layer4; the disagreements
# measured were all below 2e-7. A wrong temperature gave disagreements up to 2.4e-3.
RELU_TIE = 1e-4
# A max-pool window whose Keras winner is not the reference's own may be short of its own
# maximum by at most this, relative to the largest stem output: the stems' float32 forward
# error is at most 6e-7 (none disagreed in the runs measured).
POOL_TIE = 1e-5
# The losses' decisions must be clear of a tie by this relative margin (see
# ``reference_training.full_losses``): float32 errors of the distances compared measured
# 1.4e-6, of the dense hinges' arguments 5e-6; this case's margins are 3e-4 and more.
DECISION_MARGIN = 1e-4


def _reference():
    """Random torch weights; each residual branch's last BatchNorm scale shrunk to 0.2 x.

    With scales near 1 everywhere the residual stream of a random ResNet-50 grows block by
    block and its float32 backward pass loses precision: torch float32 momentum buffers then
    differ from float64 by 3e-4 even with the Keras decisions shared; small last scales, as
    trained ResNets have, keep it well conditioned (1.9e-5), so that float32 parity is a
    meaningful test.
    """
    reference = randomize_(LbAReference(NUM_CLASSES, depth=DEPTH, width=WIDTH), seed=0)
    return shrink_residual_branches_(reference, 0.2)


def _keras_model() -> LbAModel:
    model = LbAModel(num_classes=NUM_CLASSES, depth=DEPTH, width=WIDTH, method="full",
                     num_identities=P, num_instances=K, dt_reduction="official",
                     jit_compile_alignment=False, seed=0)
    return model.build_for(H, W)


def _optimizer():
    """The project's optimizer for the recipe's settings at ``LR``, without warm-up."""
    config = load_config(None, [f"train.lr={LR}", "train.warmup_epochs=0",
                                "train.backbone_lr_scale=0.1", "train.momentum=0.9",
                                "train.nesterov=true", "train.weight_decay=0.0005",
                                "train.precision=float32"])
    return build_optimizer(config.train, STEPS_PER_EPOCH)


def _batch(step: int):
    """Images ``[2PK, H, W, 3]`` [RGB; IR], identity-major labels and the alignment pairs."""
    rng = np.random.default_rng(step)
    images = rng.normal(size=(2 * P * K, H, W, 3)).astype(np.float32)
    labels = np.tile(np.repeat(IDENTITIES, K), 2)
    pairs = {name: tuple(t.numpy() for t in sample_alignment_pairs(P, K, tf.constant([step, seed])))
             for name, seed in (("layer3", 3), ("layer4", 4))}
    return images, labels, pairs


@contextlib.contextmanager
def _recording_relu_inputs():
    """Record the input of every ReLU of the Keras ResNet (``lba_tf.models.resnet`` applies
    them with ``keras.ops.relu``), as ``[N, C, H, W]`` arrays in call order; outputs unchanged."""
    inputs = []
    relu = keras_resnet.ops.relu

    def recording(x):
        inputs.append(np.transpose(np.asarray(x), (0, 3, 1, 2)))
        return relu(x)

    with mock.patch.object(keras_resnet.ops, "relu", recording):
        yield inputs


def _keras_step(model, optimizer, images, labels, pairs) -> dict:
    with tf.GradientTape() as tape:
        out = model.compute_losses(tf.constant(images), tf.constant(labels, tf.int32),
                                   training=True,
                                   pairs={k: tuple(map(tf.constant, v)) for k, v in pairs.items()})
    grads = tape.gradient(out["total"], model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return {name: float(out[name]) for name in COMPONENTS}


def _torch_step(reference, optimizer, images, labels, pairs, margins=None) -> dict:
    """One step of the reference in its own dtype; ``margins`` as in ``full_losses``."""
    dtype = next(reference.parameters()).dtype
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype)
    half = P * K
    torch_pairs = {name: tuple(torch.from_numpy(index.astype(np.int64)) for index in pair)
                   for name, pair in pairs.items()}
    optimizer.zero_grad()
    losses = reference_training.full_losses(reference, nchw[:half], nchw[half:],
                                            torch.from_numpy(labels.astype(np.int64)),
                                            torch_pairs["layer3"], torch_pairs["layer4"],
                                            margins=margins)
    losses["total"].backward()
    optimizer.step()
    return {name: value.item() for name, value in losses.items()}


def _weights(model: LbAModel) -> dict:
    """Every float variable by path (the alignment's integer seed state left out)."""
    return {v.path: np.array(v.numpy(), np.float64) for v in model.weights if v.dtype != "int64"}


def _keras_buffers(model: LbAModel, optimizer) -> dict:
    """The momentum buffers by variable path (built in the order of the variables applied)."""
    return {v.path: np.array(buffer.numpy(), np.float64)
            for v, buffer in zip(model.trainable_variables, optimizer.momentums, strict=True)}


@pytest.fixture(scope="module")
def run():
    """The imported state, then per step: the start, the decisions and, for the float64
    reference and both float32 implementations, losses, weights and momentum buffers."""
    reference = _reference()
    model = _keras_model()
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    assign_lba_checkpoint(model.encoder, model.bnneck, model.classifier, state)
    imported = {"weights": _weights(model), "expected": reference_training.keras_state(reference)}
    float32 = copy.deepcopy(reference).float().train()
    reference.double().train()
    torch_optimizer = reference_training.recipe_sgd(reference, LR)
    float32_optimizer = reference_training.recipe_sgd(float32, LR)
    keras_optimizer = _optimizer()

    steps = []
    for step in range(STEPS):
        images, labels, pairs = _batch(step)
        start = _weights(model)
        reference_training.load_keras_state_(reference, start)
        reference_training.load_keras_state_(float32, start)
        with _recording_relu_inputs() as relu_inputs:
            keras_losses = _keras_step(model, keras_optimizer, images, labels, pairs)
        margins = {}
        with following(relu_inputs) as followed:
            expected_losses = _torch_step(reference, torch_optimizer, images, labels, pairs,
                                          margins)
        with following(relu_inputs) as followed_float32:
            float32_losses = _torch_step(float32, float32_optimizer, images, labels, pairs)
        steps.append({
            "start": start,
            "relu_calls": len(relu_inputs),
            "followed": {"keras": followed, "torch_float32": followed_float32},
            "margins": margins,
            "expected": {
                "losses": expected_losses,
                "weights": reference_training.keras_state(reference),
                "buffers": reference_training.momentum_buffers(reference, torch_optimizer),
            },
            "keras": {
                "losses": keras_losses,
                "weights": _weights(model),
                "buffers": _keras_buffers(model, keras_optimizer),
            },
            "torch_float32": {
                "losses": float32_losses,
                "weights": reference_training.keras_state(float32),
                "buffers": reference_training.momentum_buffers(float32, float32_optimizer),
            },
        })
    return {"imported": imported, "steps": steps}


def test_the_import_gives_the_reference_weights_exactly(run):
    actual, expected = run["imported"]["weights"], run["imported"]["expected"]
    assert set(actual) == set(expected)
    for path in expected:
        np.testing.assert_array_equal(actual[path], expected[path], err_msg=path)


def test_the_keras_optimizer_uses_the_base_rate_and_two_groups():
    optimizer = _optimizer()
    model = _keras_model()
    optimizer.build(model.trainable_variables)
    assert float(optimizer.learning_rate) == pytest.approx(LR)
    heads = sorted(v.path for v in model.trainable_variables if optimizer.lr_scale_of(v) == 1.0)
    assert heads == ["bnneck/batch_norm/gamma", "classifier/kernel"]
    assert all(optimizer.lr_scale_of(v) == pytest.approx(0.1)
               for v in model.trainable_variables if v.path not in heads)


@pytest.mark.parametrize("step", range(STEPS))
def test_the_reference_decides_as_keras_only_at_ties(run, step):
    """Every Keras ReLU was followed, and where the reference's own float64 values would decide
    a ReLU or a max-pool window otherwise, they are within float32 rounding of a tie."""
    record = run["steps"][step]
    # 2 stems + 16 bottlenecks x 3 + layer4 again on the layer3 reconstruction (3 x 3)
    assert record["relu_calls"] == 2 + 16 * 3 + 3 * 3
    for implementation, followed in record["followed"].items():
        assert followed.exhausted, implementation
        assert followed.largest_relu_disagreement < RELU_TIE, (
            implementation, followed.relu_disagreements, followed.largest_relu_disagreement)
        assert followed.largest_pool_disagreement < POOL_TIE, (
            implementation, followed.pool_disagreements, followed.largest_pool_disagreement)


@pytest.mark.parametrize("step", range(STEPS))
def test_the_losses_decisions_are_clear_of_ties(run, step):
    """The batch-hard triplet's hardest pairs and hinges and the dense triplet's hinges switch
    only at distances farther than float32 error from this case's, so no float32 run decides
    them otherwise than the reference."""
    margins = run["steps"][step]["margins"]
    assert set(margins) == {"hardest positive", "hardest negative", "triplet hinge",
                            "dense hinge layer3", "dense hinge layer4"}
    for kind, margin in margins.items():
        assert margin > DECISION_MARGIN, (kind, margin)


@pytest.mark.parametrize("step", range(STEPS))
@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_loss_component_matches_the_reference(run, implementation, component, step):
    actual = run["steps"][step][implementation]["losses"][component]
    expected = run["steps"][step]["expected"]["losses"][component]
    assert expected > 0.0, component
    assert abs(actual - expected) / abs(expected) < LOSS_RTOL, (component, actual, expected)


@pytest.mark.parametrize("step", range(STEPS))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_weights_and_running_statistics_match_the_reference(run, implementation, step):
    actual = run["steps"][step][implementation]["weights"]
    expected = run["steps"][step]["expected"]["weights"]
    assert set(actual) == set(expected)
    for path in sorted(expected):
        assert relative_error(actual[path], expected[path]) < WEIGHT_RTOL, path


@pytest.mark.parametrize("step", range(STEPS))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_update_matches_the_reference(run, implementation, step):
    """The change of each variable in the step, not only its new value, agrees with torch."""
    record = run["steps"][step]
    weights, expected_weights = record[implementation]["weights"], record["expected"]["weights"]
    unchanged = []
    for path in sorted(expected_weights):
        expected = expected_weights[path] - record["start"][path]
        actual = weights[path] - record["start"][path]
        if not np.any(expected):
            unchanged.append(path)
            assert not np.any(actual), path
            continue
        # the update is seen through float32 weights: allow their resolution
        resolution = np.spacing(np.abs(weights[path]).astype(np.float32))
        allowed = UPDATE_RTOL * np.abs(expected).max() + resolution
        error = relative_error(actual, expected)
        assert np.all(np.abs(actual - expected) <= allowed), (path, error)
    # only the BNNeck shift is frozen; every other weight and statistic moves
    assert unchanged == ["bnneck/batch_norm/beta"]


@pytest.mark.parametrize("step", range(STEPS))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_momentum_buffers_match_the_reference(run, implementation, step):
    actual = run["steps"][step][implementation]["buffers"]
    expected = run["steps"][step]["expected"]["buffers"]
    assert set(actual) == set(expected)
    for path in sorted(expected):
        assert relative_error(actual[path], expected[path]) < BUFFER_RTOL, path
