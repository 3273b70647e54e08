"""The schema: every field documented, no defaults beside configs/base.yaml, immutable configs."""

import dataclasses
import inspect
import re
import typing

import pytest
import yaml

from lba_tf.config import CONFIG_DIR, Config, load_config


def _sections(cls=Config):
    """``cls`` and every section dataclass under it, outermost first."""
    found = [cls]
    for tp in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(tp):
            found += _sections(tp)
    return found


SECTIONS = _sections()


def _schema_keys(cls=Config, prefix=""):
    """Dotted names of every leaf field under ``cls``."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        keys += _schema_keys(tp, f"{prefix}{name}.") if dataclasses.is_dataclass(tp) else [prefix + name]
    return keys


def _yaml_keys(tree, prefix=""):
    """Dotted names of every leaf value of a YAML mapping."""
    keys = []
    for name, value in tree.items():
        keys += _yaml_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [prefix + name]
    return keys


def _documented(cls):
    """The names listed under ``Attributes:`` in the docstring of ``cls``, in order."""
    _, found, attributes = inspect.cleandoc(cls.__doc__).partition("\nAttributes:\n")
    assert found, f"{cls.__name__} has no Attributes: section"
    return re.findall(r"^    (\w+):", attributes, flags=re.MULTILINE)


def test_the_schema_has_every_section():
    assert [cls.__name__ for cls in SECTIONS] == [
        "Config",
        "DataConfig",
        "AugmentConfig",
        "SyntheticConfig",
        "ModelConfig",
        "LossConfig",
        "TrainConfig",
        "EvalConfig",
        "ExportConfig",
    ]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_every_field_is_documented_under_attributes(section):
    assert _documented(section) == [f.name for f in dataclasses.fields(section)]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_fields_carry_no_default_value(section):
    with_default = [
        f.name
        for f in dataclasses.fields(section)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


def test_base_yaml_sets_every_field_and_nothing_else():
    tree = yaml.safe_load((CONFIG_DIR / "base.yaml").read_text())
    # ``name`` is the file's stem, and the recipe has no parent
    assert "name" not in tree and "base" not in tree
    assert sorted(_yaml_keys(tree)) == sorted(key for key in _schema_keys() if key != "name")


def test_config_is_immutable(child):
    cfg = load_config(child)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
