"""Two-stream encoder: stem routing, single-modality batches, torch parity, .keras round trip."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.models.encoder import TwoStreamEncoder
from lba_tf.models.heads import GeMPooling
from lba_tf.tools.import_torch import assign_torchvision_resnet
from tests.models.harness import run_keras_file_test
from tests.torch_reference.parity import TOLERANCE, l2_normalize, nhwc, relative_error


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _tiny_encoder():
    encoder = TwoStreamEncoder(depth=18, width=8)
    # Give each stem its own distinctive weights so routing mistakes show.
    encoder.infrared_stem.conv1.kernel.assign(-encoder.visible_stem.conv1.kernel)
    return encoder


def _assert_close(actual, expected):
    assert relative_error(actual, expected) < 1e-5


def _stem_path(encoder, images, stem):
    return encoder.body(stem(images, training=False), training=False)


def test_resnet50_feature_shapes_at_full_size():
    encoder = TwoStreamEncoder()
    images = np.zeros((2, 288, 144, 3), np.float32)
    out = encoder(images, np.array([0, 1], np.int32), training=False)
    assert tuple(out["layer3"].shape) == (2, 18, 9, 1024)
    assert tuple(out["layer4"].shape) == (2, 18, 9, 2048)


def test_forward_pair_concatenates_visible_then_infrared():
    encoder = _tiny_encoder()
    visible, infrared = _images((3, 64, 32, 3), 1), _images((2, 64, 32, 3), 2)
    out = encoder.forward_pair(visible, infrared, training=False)
    assert out["layer4"].shape[0] == 5
    for name in ("layer3", "layer4"):
        _assert_close(out[name][:3], _stem_path(encoder, visible, encoder.visible_stem)[name])
        _assert_close(out[name][3:], _stem_path(encoder, infrared, encoder.infrared_stem)[name])


def test_forward_pair_batch_norm_sees_the_whole_batch():
    encoder = _tiny_encoder()
    visible, infrared = _images((2, 32, 16, 3), 1), _images((2, 32, 16, 3), 2)
    # In training mode outputs use batch statistics only, so the moving-average updates of the
    # repeated calls below do not change them.
    out = encoder.forward_pair(visible, infrared, training=True)
    stems = [encoder.visible_stem(visible, training=True), encoder.infrared_stem(infrared, training=True)]
    whole = encoder.body(np.concatenate(stems), training=True)["layer4"]
    halves = np.concatenate([encoder.body(s, training=True)["layer4"] for s in stems])
    _assert_close(out["layer4"], whole)
    assert relative_error(out["layer4"], halves) > 1e-2


def test_mixed_batch_routes_each_image_through_its_stem():
    encoder = _tiny_encoder()
    images = _images((5, 64, 32, 3), 3)
    modality = np.array([1, 0, 0, 1, 0], np.int32)
    out = encoder(images, modality, training=False)
    stems = (encoder.visible_stem, encoder.infrared_stem)
    for i, m in enumerate(modality):
        alone = _stem_path(encoder, images[i : i + 1], stems[m])
        other = _stem_path(encoder, images[i : i + 1], stems[1 - m])
        _assert_close(out["layer4"][i : i + 1], alone["layer4"])
        _assert_close(out["layer3"][i : i + 1], alone["layer3"])
        assert not np.allclose(out["layer4"][i : i + 1], other["layer4"], rtol=1e-3)


@pytest.mark.parametrize("modality_value", [0, 1])
def test_single_modality_batch_in_tf_function(modality_value):
    encoder = _tiny_encoder()
    stems = (encoder.visible_stem, encoder.infrared_stem)
    used, unused = stems[modality_value], stems[1 - modality_value]

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 16, 3]), tf.TensorSpec([None], tf.int32)])
    def encode(images, modality):
        return encoder(images, modality, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 16, 3]), tf.TensorSpec([None], tf.int32)])
    def encode_training(images, modality):
        return encoder(images, modality, training=True)

    images = _images((3, 32, 16, 3), 4)
    modality = np.full([3], modality_value, np.int32)
    _assert_close(encode(images, modality)["layer4"], _stem_path(encoder, images, used)["layer4"])

    unused_mean = unused.bn1.moving_mean.numpy().copy()
    used_mean = used.bn1.moving_mean.numpy().copy()
    out = encode_training(images, modality)
    assert np.isfinite(out["layer4"].numpy()).all()
    np.testing.assert_array_equal(unused.bn1.moving_mean.numpy(), unused_mean)
    assert not np.allclose(used.bn1.moving_mean.numpy(), used_mean)


@pytest.mark.parametrize("compiled", [False, True])
def test_empty_batch_gives_empty_features(compiled):
    encoder = _tiny_encoder()
    call = encoder
    if compiled:
        call = tf.function(
            lambda x, m: encoder(x, m, training=False),
            input_signature=[tf.TensorSpec([None, 32, 16, 3]), tf.TensorSpec([None], tf.int32)],
        )
    out = call(np.zeros((0, 32, 16, 3), np.float32), np.zeros((0,), np.int32))
    assert tuple(out["layer3"].shape) == (0, 2, 1, encoder.layer3_channels)
    assert tuple(out["layer4"].shape) == (0, 2, 1, encoder.layer4_channels)


def test_xla_compiled_encoder_routes_like_the_eager_one():
    encoder = _tiny_encoder()
    compiled = tf.function(lambda x, m: encoder(x, m, training=False)["layer4"], jit_compile=True)
    images = _images((4, 32, 16, 3), 8)
    for modality in ([0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 1]):
        modality = np.array(modality, np.int32)
        _assert_close(compiled(images, modality), encoder(images, modality, training=False)["layer4"])
    assert tuple(compiled(images[:0], modality[:0]).shape) == (0, 2, 1, encoder.layer4_channels)


def test_empty_training_batch_is_an_error_not_nan_statistics():
    encoder = _tiny_encoder()
    mean = encoder.visible_stem.bn1.moving_mean.numpy().copy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="a training batch needs an image"):
        encoder(np.zeros((0, 32, 16, 3), np.float32), np.zeros((0,), np.int32), training=True)
    np.testing.assert_array_equal(encoder.visible_stem.bn1.moving_mean.numpy(), mean)


def test_keras_file_round_trip(tmp_path):
    encoder = _tiny_encoder()
    images = _images((3, 32, 16, 3), 5)
    modality = np.array([0, 1, 1], np.int32)
    run_keras_file_test(encoder, lambda model: model(images, modality), tmp_path)


@pytest.mark.parametrize("depth, width, size", [(50, 16, (64, 32)), (18, 16, (70, 35))])
def test_both_stream_paths_match_torch(depth, width, size):
    torch = pytest.importorskip("torch")
    from tests.torch_reference.resnet import ResNet, gem, randomize_

    reference = randomize_(ResNet(depth, width, last_stride=1)).eval()
    encoder = TwoStreamEncoder(depth, width)
    assign_torchvision_resnet(encoder, {k: v.numpy() for k, v in reference.state_dict().items()})
    reference.double()  # the float32 weights, run in float64 (parity.TOLERANCE)
    visible, infrared = _images((2, *size, 3), 6), _images((2, *size, 3), 7)
    with torch.no_grad():
        expected = [reference(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()) for x in (visible, infrared)]
    expected = {name: np.concatenate([nhwc(e[name]) for e in expected]) for name in ("layer3", "layer4")}
    with torch.no_grad():
        expected_embedding = l2_normalize(gem(torch.from_numpy(expected["layer4"].transpose(0, 3, 1, 2))))

    pair = encoder.forward_pair(visible, infrared, training=False)
    mixed_order = np.array([2, 0, 3, 1])
    mixed = encoder(np.concatenate([visible, infrared])[mixed_order], np.array([1, 0, 1, 0], np.int32), training=False)
    for name in ("layer3", "layer4"):
        assert relative_error(pair[name], expected[name]) < TOLERANCE
        assert relative_error(mixed[name], expected[name][mixed_order]) < TOLERANCE
    embedding = l2_normalize(GeMPooling()(pair["layer4"]))
    assert relative_error(embedding, expected_embedding) < TOLERANCE
