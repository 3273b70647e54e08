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
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

from lba_tf.config import load_config  # noqa: E402
from lba_tf.models.alignment import sample_alignment_pairs  # noqa: E402
from lba_tf.models.lba import LbAModel  # noqa: E402
from lba_tf.tools.import_torch import assign_lba_checkpoint  # noqa: E402
from lba_tf.training.trainer import build_optimizer  # noqa: E402
from tests.torch_reference import training as reference_training  # noqa: E402
from tests.torch_reference.lba import LbAReference  # noqa: E402
from tests.torch_reference.parity import TOLERANCE, relative_error  # noqa: E402
from tests.torch_reference.resnet import randomize_  # noqa: E402

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
WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 1e-6
UPDATE_RTOL = 1e-4  # of the largest update of a variable, on top of its float32 resolution


def _reference():
    """Random torch weights; each residual branch's last BatchNorm scale shrunk to 0.2 x.

    With scales near 1 everywhere the residual stream of a random ResNet-50 grows block by
    block and its float32 backward pass loses precision (torch float32 and float64 gradients
    then differ by 5-30 %); small last scales, as trained ResNets have, keep it well
    conditioned, so that float32 parity is a meaningful test.
    """
    reference = randomize_(LbAReference(NUM_CLASSES, depth=DEPTH, width=WIDTH), seed=0)
    with torch.no_grad():
        for name, module in reference.named_modules():
            if name.endswith(".bn3"):
                module.weight.mul_(0.2)
    return reference


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


def _keras_step(model, optimizer, images, labels, pairs) -> dict:
    with tf.GradientTape() as tape:
        out = model.compute_losses(tf.constant(images), tf.constant(labels, tf.int32),
                                   training=True,
                                   pairs={k: tuple(map(tf.constant, v)) for k, v in pairs.items()})
    grads = tape.gradient(out["total"], model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return {name: float(out[name]) for name in COMPONENTS}


def _torch_step(reference, optimizer, images, labels, pairs) -> dict:
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2)).double()
    half = P * K
    torch_pairs = {name: tuple(torch.from_numpy(index.astype(np.int64)) for index in pair)
                   for name, pair in pairs.items()}
    optimizer.zero_grad()
    losses = reference_training.full_losses(reference, nchw[:half], nchw[half:],
                                            torch.from_numpy(labels.astype(np.int64)),
                                            torch_pairs["layer3"], torch_pairs["layer4"])
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
    """The imported state, then per step: losses, weights and momentum buffers of both sides."""
    reference = _reference()
    model = _keras_model()
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    assign_lba_checkpoint(model.encoder, model.bnneck, model.classifier, state)
    imported = {"weights": _weights(model), "expected": reference_training.keras_state(reference)}
    reference.double().train()
    torch_optimizer = reference_training.recipe_sgd(reference, LR)
    keras_optimizer = _optimizer()

    steps = []
    for step in range(STEPS):
        images, labels, pairs = _batch(step)
        start = _weights(model)
        reference_training.load_keras_state_(reference, start)
        steps.append({
            "start": start,
            "losses": _keras_step(model, keras_optimizer, images, labels, pairs),
            "expected_losses": _torch_step(reference, torch_optimizer, images, labels, pairs),
            "weights": _weights(model),
            "expected_weights": reference_training.keras_state(reference),
            "buffers": _keras_buffers(model, keras_optimizer),
            "expected_buffers": reference_training.momentum_buffers(reference, torch_optimizer),
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
@pytest.mark.parametrize("component", COMPONENTS)
def test_every_loss_component_matches_torch(run, step, component):
    actual = run["steps"][step]["losses"][component]
    expected = run["steps"][step]["expected_losses"][component]
    assert expected > 0.0, component
    assert abs(actual - expected) / abs(expected) < TOLERANCE, (component, actual, expected)


@pytest.mark.parametrize("step", range(STEPS))
def test_weights_and_running_statistics_match_torch_after_each_step(run, step):
    actual, expected = run["steps"][step]["weights"], run["steps"][step]["expected_weights"]
    assert set(actual) == set(expected)
    for path in sorted(expected):
        np.testing.assert_allclose(actual[path], expected[path], rtol=WEIGHT_RTOL,
                                   atol=WEIGHT_ATOL, err_msg=path)


@pytest.mark.parametrize("step", range(STEPS))
def test_every_update_matches_torch(run, step):
    """The change of each variable in the step, not only its new value, agrees with torch."""
    record = run["steps"][step]
    unchanged = []
    for path in sorted(record["expected_weights"]):
        expected = record["expected_weights"][path] - record["start"][path]
        actual = record["weights"][path] - record["start"][path]
        if not np.any(expected):
            unchanged.append(path)
            assert not np.any(actual), path
            continue
        # the Keras update is seen through float32 weights: allow their resolution
        resolution = np.spacing(np.abs(record["weights"][path]).astype(np.float32))
        allowed = UPDATE_RTOL * np.abs(expected).max() + resolution
        error = relative_error(actual, expected)
        assert np.all(np.abs(actual - expected) <= allowed), (path, error)
    # only the BNNeck shift is frozen; every other weight and statistic moves
    assert unchanged == ["bnneck/batch_norm/beta"]


@pytest.mark.parametrize("step", range(STEPS))
def test_momentum_buffers_match_torch(run, step):
    actual, expected = run["steps"][step]["buffers"], run["steps"][step]["expected_buffers"]
    assert set(actual) == set(expected)
    for path in sorted(expected):
        assert relative_error(actual[path], expected[path]) < TOLERANCE, path
