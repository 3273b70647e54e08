"""python -m lba_tf.tools.import_torch: files in, Keras weights out, loadable as the config says."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import load_config
from lba_tf.models.lba import build_model
from lba_tf.tools.import_torch import main
from tests.tiny import set_args
from tests.torch_reference.parity import l2_normalize, nhwc, relative_error

torch = pytest.importorskip("torch")
from tests.torch_reference.lba import LbAReference  # noqa: E402
from tests.torch_reference.resnet import ResNet, randomize_  # noqa: E402

TINY = ["model.depth=18", "model.width=8", "data.image_height=40", "data.image_width=20"]


def test_torchvision_resnet_becomes_the_pretrained_encoder(tmp_path):
    reference = randomize_(ResNet(18, 8, last_stride=2), seed=1).eval()
    src, dst = tmp_path / "resnet18.pth", tmp_path / "imagenet.weights.h5"
    torch.save(reference.state_dict(), src)
    assert main([str(src), str(dst), *set_args(TINY)]) == 0
    model = build_model(load_config(None, [*TINY, f"model.pretrained={dst}"]), num_classes=3)
    expected = reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    for stem in (model.encoder.visible_stem, model.encoder.infrared_stem):
        np.testing.assert_array_equal(stem.conv1.kernel.numpy(), expected)
    np.testing.assert_array_equal(model.encoder.body.layer4.blocks[1].bn2.moving_variance.numpy(),
                                  reference.layer4[1].bn2.running_var.numpy())


def test_lba_checkpoint_becomes_the_whole_model(tmp_path):
    reference = randomize_(LbAReference(num_classes=5, depth=18, width=8), seed=2).eval()
    src, dst = tmp_path / "best.t", tmp_path / "lba.weights.h5"
    torch.save({"net": reference.state_dict(), "epoch": 80}, src)
    assert main([str(src), str(dst), *set_args(TINY)]) == 0
    model = build_model(load_config(None, TINY), num_classes=5)
    model.load_weights(dst)
    images = np.random.default_rng(0).normal(size=(3, 3, 40, 20)).astype(np.float32)
    for modality in (0, 1):
        expected = reference(torch.tensor(images), infrared=bool(modality))
        got = model.embed(tf.constant(nhwc(torch.tensor(images))), tf.fill([3], modality)).numpy()
        assert relative_error(got, l2_normalize(expected["pooled"].detach().numpy())) < 1e-5


def test_bad_destination_name_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.pth"), str(tmp_path / "out.h5")])


def test_unreadable_checkpoint_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "broken.pth"
    torch.save({"something": torch.zeros(2)}, src)
    assert main([str(src), str(tmp_path / "o.weights.h5"), *set_args(TINY)]) == 1
    assert "error:" in capsys.readouterr().err
