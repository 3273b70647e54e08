"""One source of defaults: every constructor default with a recipe setting is configs/base.yaml's.

``train.seed`` is left out: it seeds a whole run (data order, augmentation, pairs); the
constructors default to ``None``, a fresh random seed, as Keras layers do.
"""

import inspect

import pytest
import yaml

from lba_tf.config import CONFIG_DIR
from lba_tf.losses.dense_triplet import dense_triplet_loss
from lba_tf.losses.triplet import batch_hard_triplet_loss
from lba_tf.models.alignment import CrossModalAlignment
from lba_tf.models.encoder import TwoStreamEncoder
from lba_tf.models.heads import GeMPooling
from lba_tf.models.lba import LbAModel
from lba_tf.models.resnet import ResNetBody, ResNetStem

RECIPE_DEFAULTS = [
    ("model.depth", LbAModel, "depth"),
    ("model.depth", TwoStreamEncoder, "depth"),
    ("model.depth", ResNetBody, "depth"),
    ("model.width", LbAModel, "width"),
    ("model.width", TwoStreamEncoder, "width"),
    ("model.width", ResNetBody, "width"),
    ("model.width", ResNetStem, "width"),
    ("model.last_stride", LbAModel, "last_stride"),
    ("model.last_stride", TwoStreamEncoder, "last_stride"),
    ("model.last_stride", ResNetBody, "last_stride"),
    ("model.method", LbAModel, "method"),
    ("model.gem_p", LbAModel, "gem_p"),
    ("model.gem_p", GeMPooling, "p"),
    ("model.temperature", LbAModel, "temperature"),
    ("model.temperature", CrossModalAlignment, "temperature"),
    ("model.dt_reduction", LbAModel, "dt_reduction"),
    ("model.dt_reduction", dense_triplet_loss, "reduction"),
    ("data.num_identities", LbAModel, "num_identities"),
    ("data.num_instances", LbAModel, "num_instances"),
    ("loss.triplet_margin", LbAModel, "triplet_margin"),
    ("loss.triplet_margin", batch_hard_triplet_loss, "margin"),
    ("loss.dense_triplet_margin", LbAModel, "dense_triplet_margin"),
    ("loss.dense_triplet_margin", dense_triplet_loss, "margin"),
    ("loss.dense_triplet_weight", LbAModel, "dense_triplet_weight"),
    ("loss.id_consistency_weight", LbAModel, "id_consistency_weight"),
    ("train.jit_compile", LbAModel, "jit_compile_alignment"),
    ("train.jit_compile", CrossModalAlignment, "jit_compile"),
]
"""``(base.yaml key, constructor or loss function, its argument)`` for every recipe setting."""

NO_CONSTRUCTOR_ARGUMENT = {"model.pretrained"}  # a weights file that build_model loads


def _recipe():
    return yaml.safe_load((CONFIG_DIR / "base.yaml").read_text())


def _setting(recipe, key):
    section, name = key.split(".")
    return recipe[section][name]


@pytest.mark.parametrize(
    "key,target,argument",
    RECIPE_DEFAULTS,
    ids=[f"{key}->{target.__name__}.{argument}" for key, target, argument in RECIPE_DEFAULTS],
)
def test_default_is_the_recipe_value(key, target, argument):
    default = inspect.signature(target).parameters[argument].default
    assert default == _setting(_recipe(), key)


def test_every_model_and_loss_setting_is_pinned():
    recipe = _recipe()
    settings = {f"{section}.{name}" for section in ("model", "loss") for name in recipe[section]}
    pinned = {key for key, _, _ in RECIPE_DEFAULTS}
    assert settings - NO_CONSTRUCTOR_ARGUMENT <= pinned
