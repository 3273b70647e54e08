"""The models' test harness: configuration round trips and ``.keras`` save/load checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def run_config_round_trip_test(layer: keras.layers.Layer) -> keras.layers.Layer:
    """``from_config(get_config())`` and Keras serialisation both rebuild ``layer``'s configuration.

    Args:
        layer: a layer or model whose constructor arguments ``get_config`` returns.

    Returns:
        The clone made by ``from_config``, for checks of its attributes.
    """
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config
    return clone


def run_keras_file_test(model: keras.Model, outputs: Callable[[keras.Model], Any], tmp_path) -> keras.Model:
    """A ``.keras`` save and load keeps the class and configuration and gives equal outputs.

    Args:
        model: a built model.
        outputs: ``outputs(model)`` returns a nested structure of tensors, compared exactly
            between ``model`` and the loaded copy.
        tmp_path: a directory for the file (pytest's ``tmp_path``).

    Returns:
        The loaded model.
    """
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    expected, actual = outputs(model), outputs(loaded)
    tf.nest.assert_same_structure(expected, actual)
    for want, got in zip(tf.nest.flatten(expected), tf.nest.flatten(actual), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    return loaded
