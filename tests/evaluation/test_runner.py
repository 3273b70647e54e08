"""Feature extraction: one traced function per model, released with the model."""

import gc
import weakref

import numpy as np

from lba_tf.evaluation import runner
from lba_tf.models.lba import LbAModel


def _model():
    return LbAModel(num_classes=4, depth=18, width=8, method="baseline").build_for(32, 16)


def test_a_second_evaluation_reuses_the_traced_function():
    model = _model()
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 16, 3), np.uint8)
    modality = [0, 1, 0, 1, 0, 1]
    first = runner.extract_features(model, images, modality, batch_size=4)
    traces = runner._embed_function(model).experimental_get_tracing_count()
    second = runner.extract_features(model, images, modality, batch_size=4)
    assert runner._embed_function(model).experimental_get_tracing_count() == traces
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_the_cached_function_does_not_keep_the_model_alive():
    model = _model()
    runner.extract_features(model, np.zeros((2, 32, 16, 3), np.uint8), [0, 1], batch_size=2)
    assert model in runner._EMBED_FUNCTIONS
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
