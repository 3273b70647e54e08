"""python -m lba_tf.tools.import_torch: files in, Keras weights out, loadable as the config says."""

import numpy as np
import pytest
import tensorflow as tf

from lba_tf.config import CONFIG_DIR, load_config
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
    np.testing.assert_array_equal(
        model.encoder.body.layer4.blocks[1].bn2.moving_variance.numpy(), reference.layer4[1].bn2.running_var.numpy()
    )


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


def test_without_a_config_the_model_is_the_checkpoints(tmp_path):
    reference = randomize_(LbAReference(num_classes=4, depth=34, width=4), seed=3).eval()
    src, dst = tmp_path / "best.t", tmp_path / "lba.weights.h5"
    torch.save({"net": reference.state_dict()}, src)
    assert main([str(src), str(dst)]) == 0
    model = build_model(load_config(CONFIG_DIR / "base.yaml", ["model.depth=34", "model.width=4"]), num_classes=4)
    model.load_weights(dst)
    np.testing.assert_array_equal(model.classifier.kernel.numpy(), reference.classifier.weight.detach().numpy().T)


@pytest.mark.parametrize("depth, width", [(18, 8), (34, 4), (50, 4)])
def test_architecture_is_read_from_the_tensors(depth, width):
    from lba_tf.tools.import_torch import architecture_of

    torchvision = {k: v.numpy() for k, v in ResNet(depth, width).state_dict().items()}
    lba = {k: v.numpy() for k, v in LbAReference(3, depth, width).state_dict().items()}
    for state in (torchvision, lba):
        assert architecture_of(state) == {"model.depth": depth, "model.width": width}


def test_a_contradicting_config_is_one_line_not_a_tensor_list(tmp_path, capsys):
    src = tmp_path / "best.t"
    torch.save({"net": LbAReference(num_classes=3, depth=50, width=8).state_dict()}, src)
    assert main([str(src), str(tmp_path / "o.weights.h5"), "--config", str(CONFIG_DIR / "synthetic.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {src} is a ResNet-50 of width 8, the config says model.depth=18, model.width=16: "
        "leave out --config to take the checkpoint's, or --set model.depth=50 --set model.width=8"
    ]


def test_without_torch_the_error_names_the_install(tmp_path, monkeypatch):
    import builtins

    from lba_tf.tools.import_torch import WeightImportError, load_torch_checkpoint

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(WeightImportError, match=r"needs torch: pip install torch==2.13.0") as info:
        load_torch_checkpoint(tmp_path / "best.t")
    assert "\n" not in str(info.value)


def test_bad_destination_name_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.pth"), str(tmp_path / "out.h5")])


def test_unreadable_checkpoint_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "broken.pth"
    torch.save({"something": torch.zeros(2)}, src)
    assert main([str(src), str(tmp_path / "o.weights.h5"), *set_args(TINY)]) == 1
    assert "error:" in capsys.readouterr().err
