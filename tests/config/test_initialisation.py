"""Training's initialisation: model.pretrained chosen (weights file or random) before any work."""

import pytest

from lba_tf.config import CONFIG_DIR, ConfigError, check_initialisation, load_config


@pytest.mark.parametrize("name", ["sysu.yaml", "regdb.yaml", "llcm.yaml", "base.yaml"])
def test_recipe_configs_need_an_initialisation_chosen(name, tmp_path):
    with pytest.raises(
        ConfigError,
        match="model.pretrained is not set: the published numbers start from torchvision's ImageNet ResNet-50",
    ):
        check_initialisation(load_config(CONFIG_DIR / name))
    check_initialisation(load_config(CONFIG_DIR / name, ["model.pretrained=random"]))
    weights = tmp_path / "imagenet.weights.h5"
    weights.write_bytes(b"")
    check_initialisation(load_config(CONFIG_DIR / name, [f"model.pretrained={weights}"]))


def test_the_demo_trains_from_random_weights_by_choice():
    config = load_config(None)
    assert config.model.pretrained == "random"
    check_initialisation(config)


def test_a_missing_weights_file_is_named_with_how_to_make_it(tmp_path):
    missing = tmp_path / "w.weights.h5"
    config = load_config(CONFIG_DIR / "sysu.yaml", [f"model.pretrained={missing}"])
    with pytest.raises(ConfigError) as err:
        check_initialisation(config)
    assert str(err.value) == (
        f"model.pretrained: {missing}: file not found (make it with `python -m lba_tf.tools.import_torch "
        f"resnet50.pth weights/resnet50_imagenet.weights.h5 --config <this config>`, "
        f"or pass --set model.pretrained=random)"
    )
