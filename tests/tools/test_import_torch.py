"""PyTorch weight import: checkpoint reading, torchvision and LbA layouts, the error report."""

import argparse
import copy
import pickle

import numpy as np
import pytest

from lba_tf.models.encoder import TwoStreamEncoder
from lba_tf.models.heads import BNNeck, GeMPooling, IdentityClassifier
from lba_tf.tools.import_torch import (
    WeightImportError,
    assign_lba_checkpoint,
    assign_torchvision_resnet,
    checkpoint_kind,
    load_torch_checkpoint,
    num_classes_in_checkpoint,
)
from tests.torch_reference.parity import TOLERANCE, nhwc, relative_error

torch = pytest.importorskip("torch")
from tests.torch_reference.lba import LbAReference  # noqa: E402
from tests.torch_reference.resnet import ResNet, randomize_  # noqa: E402

DEPTH, WIDTH, NUM_CLASSES = 50, 16, 7


def _save(tmp_path, obj, name="checkpoint.t"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _numpy_state(module):
    return {key: value.numpy().copy() for key, value in module.state_dict().items()}


def _batch_norm_count(module):
    return sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in module.modules())


@pytest.fixture(scope="module")
def reference():
    return randomize_(LbAReference(NUM_CLASSES, DEPTH, WIDTH), seed=3).eval()


@pytest.fixture
def lba_target():
    return TwoStreamEncoder(DEPTH, WIDTH), BNNeck(), IdentityClassifier(NUM_CLASSES)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_unwraps_net_and_strips_data_parallel_prefix(tmp_path, reference, prefix):
    state = reference.state_dict()
    checkpoint = {"net": {prefix + key: value for key, value in state.items()}, "epoch": 80, "mAP": 0.55}
    loaded = load_torch_checkpoint(_save(tmp_path, checkpoint))
    assert list(loaded) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value.numpy())
    assert checkpoint_kind(loaded) == "lba"
    assert num_classes_in_checkpoint(loaded) == NUM_CLASSES


class _Numpy1Pickler(pickle._Pickler):
    """Names numpy's reconstructors ``numpy.core.multiarray.*``, as files written under numpy 1.x
    (the authors' environment) do; numpy 2 writes ``numpy._core.multiarray.*``."""

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", None) == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + obj.__name__.encode("ascii") + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _Numpy1PickleModule:
    Pickler = _Numpy1Pickler


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_reads_a_checkpoint_as_the_training_script_saves_it(tmp_path, reference, prefix, numpy_names):
    # the LbA training script's torch.save: the state dict, the CMC curve as a numpy array, mAP
    # and mINP as numpy float64 scalars, the epoch; DataParallel training prefixes "module."
    checkpoint = {
        "net": {prefix + key: value for key, value in reference.state_dict().items()},
        "cmc": np.linspace(0.5, 1.0, 20).astype(np.float32),
        "mAP": np.float64(0.5522),
        "mINP": np.float64(0.4188),
        "epoch": 80,
    }
    path = tmp_path / "ep_80.t"
    pickle_module = _Numpy1PickleModule if numpy_names == "numpy 1" else pickle
    torch.save(checkpoint, path, pickle_module=pickle_module)
    marker = b"numpy.core.multiarray" if numpy_names == "numpy 1" else b"numpy._core.multiarray"
    assert marker in _pickle_bytes(path)  # the file names numpy as that version does
    loaded = load_torch_checkpoint(path)
    assert list(loaded) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(loaded[key], value.numpy())


def _pickle_bytes(path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))


def test_load_still_refuses_other_python_objects(tmp_path, reference):
    # weights_only stays on: numpy arrays and scalars are allowed, arbitrary objects are not
    path = _save(tmp_path, {"net": reference.state_dict(), "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        load_torch_checkpoint(path)


def test_load_reads_a_torchvision_state_dict(tmp_path):
    state = ResNet(18, 8).state_dict()
    loaded = load_torch_checkpoint(_save(tmp_path, state))
    assert checkpoint_kind(loaded) == "torchvision"
    np.testing.assert_array_equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"].numpy())


def test_load_rejects_other_contents(tmp_path):
    with pytest.raises(WeightImportError, match="neither"):
        load_torch_checkpoint(_save(tmp_path, {"weight": torch.zeros(3)}))
    with pytest.raises(WeightImportError, match="not tensors"):
        load_torch_checkpoint(_save(tmp_path, {"conv1.weight": torch.zeros(3), "step": 3}))


def test_num_classes_needs_a_classifier():
    with pytest.raises(WeightImportError, match="classifier.weight"):
        num_classes_in_checkpoint({"conv1.weight": np.zeros(3)})


def test_torchvision_weights_go_into_both_stems_and_the_body():
    reference = randomize_(ResNet(18, 8), seed=1)
    state = _numpy_state(reference)
    encoder = TwoStreamEncoder(18, 8)
    report = assign_torchvision_resnet(encoder, state)
    conv1 = state["conv1.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(encoder.visible_stem.conv1.kernel.numpy(), conv1)
    np.testing.assert_array_equal(encoder.infrared_stem.conv1.kernel.numpy(), conv1)
    np.testing.assert_array_equal(
        encoder.body.layer2.blocks[0].downsample_bn.moving_variance.numpy(), state["layer2.0.downsample.1.running_var"]
    )
    assert report.unused == 2  # fc.weight, fc.bias
    assert report.batch_counters == _batch_norm_count(reference)
    assert report.assigned == len(state) - 2 - report.batch_counters


def test_lba_checkpoint_round_trip_matches_torch(tmp_path, reference, lba_target):
    # Saved as from a DataParallel-wrapped model.
    checkpoint = {"net": {"module." + key: value for key, value in reference.state_dict().items()}, "epoch": 80}
    state = load_torch_checkpoint(_save(tmp_path, checkpoint))
    encoder, bnneck, classifier = lba_target
    report = assign_lba_checkpoint(encoder, bnneck, classifier, state)

    # Each stem module holds a whole ResNet with fc, of which only conv1.weight and bn1's four
    # tensors are used; the body's ResNet has no fc and its conv1/bn1 (5 tensors) are unused.
    stem_tensors = len(_numpy_state(ResNet(DEPTH, WIDTH))) - _batch_norm_count(ResNet(DEPTH, WIDTH))
    assert report.unused == 2 * (stem_tensors - 5) + 5
    assert report.batch_counters == _batch_norm_count(reference)
    model_variables = len(encoder.weights) + len(bnneck.weights) + len(classifier.weights)
    assert report.assigned == model_variables
    assert report.assigned + report.unused + report.batch_counters == len(state)

    # The imported float32 weights against the reference run in float64 (parity.TOLERANCE).
    images = np.random.default_rng(0).standard_normal((2, 64, 32, 3)).astype(np.float32)
    reference64 = copy.deepcopy(reference).double()
    for modality in (0, 1):
        with torch.no_grad():
            expected = reference64(torch.from_numpy(images.transpose(0, 3, 1, 2)).double(), infrared=modality == 1)
        out = encoder(images, np.full([2], modality, np.int32), training=False)
        pooled = GeMPooling()(out["layer4"])
        neck = bnneck(pooled, training=False)
        logits = classifier(neck)
        for name in ("layer3", "layer4"):
            assert relative_error(out[name], nhwc(expected[name])) < TOLERANCE
        assert relative_error(pooled, expected["pooled"].numpy()) < TOLERANCE
        assert relative_error(neck, expected["neck"].numpy()) < TOLERANCE
        assert relative_error(logits, expected["logits"].numpy()) < TOLERANCE


def test_lba_errors_list_unknown_missing_and_misshaped_together(reference, lba_target):
    state = _numpy_state(reference)
    del state["base_resnet.base.layer3.1.bn2.running_var"]
    state["base_resnet.base.fc.weight"] = np.zeros((10, 512), np.float32)
    state["classifier.weight"] = np.zeros((NUM_CLASSES + 1, 512), np.float32)
    encoder, bnneck, classifier = lba_target
    before = [w.numpy().copy() for w in encoder.weights]
    with pytest.raises(WeightImportError) as error:
        assign_lba_checkpoint(encoder, bnneck, classifier, state)
    assert error.value.unknown == ("base_resnet.base.fc.weight",)
    assert error.value.missing == ("base_resnet.base.layer3.1.bn2.running_var",)
    assert len(error.value.misshaped) == 1 and "classifier.weight" in error.value.misshaped[0]
    message = str(error.value)
    for key in ("base_resnet.base.fc.weight", "layer3.1.bn2.running_var", "classifier.weight"):
        assert key in message
    # Nothing was copied.
    for old, new in zip(before, encoder.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_lba_import_rejects_a_checkpoint_of_another_depth(reference):
    encoder = TwoStreamEncoder(18, WIDTH)
    with pytest.raises(WeightImportError) as error:
        assign_lba_checkpoint(encoder, BNNeck(), IdentityClassifier(NUM_CLASSES), _numpy_state(reference))
    assert error.value.unknown and error.value.misshaped
