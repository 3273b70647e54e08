"""Config loading: inheritance, overrides, validation, and the message of every kind of error."""

import pathlib
import subprocess
import sys

import pytest
import yaml

import lba_tf.config
from lba_tf.config import CONFIG_DIR, ConfigError, load_config, parse_override, save_config

ALL_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_dir_is_the_repository_configs_folder():
    assert CONFIG_DIR == pathlib.Path(__file__).resolve().parents[2] / "configs"
    assert (CONFIG_DIR / "base.yaml").is_file()


def test_public_names_are_importable_from_the_package():
    for name in (
        "CONFIG_DIR",
        "DEFAULT_CONFIG",
        "RANDOM_INIT",
        "AugmentConfig",
        "Config",
        "ConfigError",
        "DataConfig",
        "EvalConfig",
        "ExportConfig",
        "LossConfig",
        "ModelConfig",
        "SyntheticConfig",
        "TrainConfig",
        "check_initialisation",
        "load_config",
        "parse_override",
        "save_config",
    ):
        assert name in lba_tf.config.__all__ and hasattr(lba_tf.config, name), name


def test_parse_override_splits_the_key_and_parses_the_value_as_yaml():
    assert parse_override(" train.milestones = [5, 7]") == ("train.milestones", [5, 7])
    assert parse_override("data.root=") == ("data.root", None)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_shipped_config_loads(name):
    cfg = load_config(CONFIG_DIR / name)
    assert cfg.name == pathlib.Path(name).stem


def test_dataset_configs_inherit_the_recipe_written_once():
    base = load_config(CONFIG_DIR / "base.yaml")
    for name in ("sysu", "regdb", "llcm"):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        assert cfg.data.dataset == name
        assert cfg.train == base.train
        assert cfg.model == base.model
        assert cfg.loss == base.loss


def test_base_recipe_matches_the_paper():
    cfg = load_config(CONFIG_DIR / "sysu.yaml")
    assert (cfg.data.image_height, cfg.data.image_width) == (288, 144)
    assert (cfg.data.num_identities, cfg.data.num_instances) == (8, 4)
    assert (cfg.model.depth, cfg.model.last_stride, cfg.model.method) == (50, 1, "full")
    assert (cfg.train.lr, cfg.train.backbone_lr_scale, cfg.train.weight_decay) == (0.1, 0.1, 5e-4)
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.milestones) == (81, 10, (20, 50))
    assert cfg.loss.dense_triplet_weight == 0.5 and cfg.model.temperature == 50.0


def test_default_config_is_the_synthetic_one():
    cfg = load_config()
    assert cfg.name == "synthetic" and cfg.data.dataset == "synthetic"
    # inherited from base.yaml untouched
    assert cfg.train.momentum == 0.9 and cfg.model.method == "full"


def test_child_overrides_base_and_keeps_the_rest(child):
    cfg = load_config(child)
    assert cfg.train.lr == 0.2
    assert cfg.train.momentum == 0.9
    assert cfg.name == "child"


def test_set_overrides_parse_values_as_yaml(child):
    cfg = load_config(
        child,
        [
            "train.lr=0.05",
            "train.milestones=[5, 7]",
            "model.pretrained=w.h5",
            "train.nesterov=false",
            "train.steps_per_epoch=12",
        ],
    )
    assert cfg.train.lr == 0.05
    assert cfg.train.milestones == (5, 7)
    assert cfg.model.pretrained == "w.h5"
    assert cfg.train.nesterov is False
    assert cfg.train.steps_per_epoch == 12


def test_later_override_wins(child):
    assert load_config(child, ["train.lr=0.3", "train.lr=0.4"]).train.lr == 0.4


def test_int_is_accepted_for_a_float_but_not_the_reverse(child):
    assert load_config(child, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 1.5"):
        load_config(child, ["train.epochs=1.5"])


def test_replace_validates(child):
    cfg = load_config(child)
    assert cfg.replace(**{"train.lr": 0.5}).train.lr == 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'; did you mean 'train.lr'"):
        cfg.replace(**{"train.lrr": 0.5})


def test_resolved_config_round_trips_through_yaml(child, tmp_path):
    cfg = load_config(child, ["train.lr=0.07"])
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert yaml.safe_load(out.read_text())["train"]["lr"] == 0.07
    assert load_config(out) == cfg


def test_unknown_key_in_file_names_file_key_and_closest_name(tmp_path, child):
    bad = _write(tmp_path, "bad.yaml", "base: child.yaml\ntrain:\n  learning_rte: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg and "unknown key 'train.learning_rte'" in msg


def test_unknown_key_suggests_the_closest_valid_name(child):
    with pytest.raises(
        ConfigError,
        match=r"--set train.momentom=0.8: unknown key 'train.momentom'; "
        r"did you mean 'train.momentum'\?",
    ):
        load_config(child, ["train.momentom=0.8"])


def test_unknown_section(child):
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(child, ["trian.lr=0.1"])


def test_wrong_type_names_source_key_expected_and_got(child):
    with pytest.raises(ConfigError, match=r"^--set train.lr=fast: train.lr: expected a number, got 'fast'$"):
        load_config(child, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train.nesterov: expected true or false, got 'yes please'"):
        load_config(child, ["train.nesterov=yes please"])


def test_wrong_type_in_file_names_the_file(tmp_path, child):
    bad = _write(tmp_path, "bad.yaml", "base: child.yaml\nmodel:\n  depth: fifty\n")
    with pytest.raises(ConfigError, match=rf"^{bad.resolve()}: model.depth: expected one of 18, 34, 50, got 'fifty'$"):
        load_config(bad)


def test_choice_not_in_the_list(child):
    with pytest.raises(ConfigError, match=r"model.method: expected one of 'baseline', 'full', got 'fancy'"):
        load_config(child, ["model.method=fancy"])


def test_value_out_of_range(child):
    with pytest.raises(ConfigError, match=r"train.momentum: 1.5 is out of range, expected a value in \[0.0, 1.0\]"):
        load_config(child, ["train.momentum=1.5"])
    with pytest.raises(ConfigError, match=r"train.lr: 0.0 is out of range, expected a value in \(0.0, inf\)"):
        load_config(child, ["train.lr=0"])
    with pytest.raises(ConfigError, match=r"data.trial: 0 is out of range, expected a value in \[1, 10\]"):
        load_config(child, ["data.trial=0"])


def test_optional_value_is_range_checked_unless_null(child):
    assert load_config(child, ["train.steps_per_epoch=null"]).train.steps_per_epoch is None
    with pytest.raises(ConfigError, match=r"train.steps_per_epoch: 0 is out of range"):
        load_config(child, ["train.steps_per_epoch=0"])


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config("nope.yaml")


def test_missing_base_file_names_it(tmp_path):
    bad = _write(tmp_path, "orphan.yaml", "base: missing_parent.yaml\n")
    with pytest.raises(ConfigError, match=r"missing_parent.yaml: config file not found"):
        load_config(bad)


def test_missing_key_names_it(tmp_path):
    bad = _write(tmp_path, "partial.yaml", "data: {}\n")
    with pytest.raises(ConfigError, match=r"missing key 'data.dataset'"):
        load_config(bad)


def test_invalid_yaml(tmp_path):
    bad = _write(tmp_path, "broken.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(bad)


def test_base_cycle_is_reported(tmp_path):
    _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"'base' forms a cycle"):
        load_config(tmp_path / "a.yaml")


def test_malformed_override(child):
    with pytest.raises(ConfigError, match=r"--set train.lr: expected KEY=VALUE"):
        load_config(child, ["train.lr"])


def test_override_into_a_value_that_is_not_a_section(child):
    with pytest.raises(ConfigError, match=r"train.lr is not a section"):
        load_config(child, ["train.lr.x=1"])


def test_range_applies_to_every_item_of_a_list(child):
    with pytest.raises(ConfigError, match=r"train.milestones: -3 is out of range, expected a value in \[0, inf\)"):
        load_config(child, ["train.milestones=[5, -3]"])


def test_scientific_notation_without_dot_or_sign_is_a_number(child):
    # PyYAML's YAML 1.1 resolver reads these as strings
    assert load_config(child, ["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config(child, ["train.weight_decay=5E4"]).train.weight_decay == 5e4
    with pytest.raises(ConfigError, match=r"train.lr: expected a number, got '1e-3x'"):
        load_config(child, ["train.lr=1e-3x"])


def test_tf32_is_off_unless_asked_for():
    assert load_config(None).train.tf32 is False
    assert load_config(CONFIG_DIR / "sysu.yaml", ["train.tf32=true"]).train.tf32 is True
    with pytest.raises(ConfigError, match="train.tf32"):
        load_config(None, ["train.tf32=maybe"])


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, lba_tf, lba_tf.config, lba_tf.cli; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_section_from_an_override_is_blamed_on_the_override():
    with pytest.raises(ConfigError, match=r"^--set bad\.key=1: unknown key 'bad'"):
        load_config(None, ["bad.key=1"])
