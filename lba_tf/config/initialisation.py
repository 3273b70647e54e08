"""The encoder's initialisation for training: ``model.pretrained`` must be chosen before any work."""

from __future__ import annotations

import pathlib

from lba_tf.config.loader import ConfigError
from lba_tf.config.schema import Config

RANDOM_INIT = "random"
"""``model.pretrained`` value that asks for random initialisation explicitly."""


def check_initialisation(config: Config) -> None:
    """Refuse to train a model whose initialisation was not chosen, before any work starts.

    The published numbers start from torchvision's ImageNet ResNet; a dataset config that
    silently trained from random weights would report far lower accuracy. ``model.pretrained``
    must name an existing weights file or be ``"random"``.

    Raises:
        ConfigError: one line saying how to make the ImageNet weights, or naming the missing file.
    """
    pretrained = config.model.pretrained
    make = (
        f"python -m lba_tf.tools.import_torch resnet{config.model.depth}.pth "
        f"weights/resnet{config.model.depth}_imagenet.weights.h5 --config <this config>"
    )
    if pretrained is None:
        raise ConfigError(
            f"model.pretrained is not set: the published numbers start from torchvision's ImageNet "
            f"ResNet-{config.model.depth}; convert its file with `{make}` and pass "
            f"--set model.pretrained=weights/resnet{config.model.depth}_imagenet.weights.h5, "
            f"or --set model.pretrained={RANDOM_INIT} to train from random weights"
        )
    if pretrained != RANDOM_INIT and not pathlib.Path(pretrained).is_file():
        raise ConfigError(
            f"model.pretrained: {pretrained}: file not found (make it with `{make}`, "
            f"or pass --set model.pretrained={RANDOM_INIT})"
        )
