"""Request tensors against a signature's inputs: converted when they fit, TF Serving's message when not."""

import grpc
import numpy as np
import pytest
import tensorflow as tf

from lba_tf.serving.errors import ServingError
from lba_tf.serving.inputs import parse_inputs

SPECS = {"images": tf.TensorSpec([None, None, None, 3], tf.uint8), "modality": tf.TensorSpec([None], tf.int32)}
IMAGES = np.arange(2 * 4 * 3 * 3, dtype=np.uint8).reshape(2, 4, 3, 3)
MODALITY = np.array([0, 1], np.int32)


def _protos(**arrays):
    return {name: tf.make_tensor_proto(value) for name, value in arrays.items()}


def test_matching_tensors_become_numpy():
    arrays = parse_inputs(_protos(images=IMAGES, modality=MODALITY), SPECS)
    assert set(arrays) == {"images", "modality"}
    np.testing.assert_array_equal(arrays["images"], IMAGES)
    np.testing.assert_array_equal(arrays["modality"], MODALITY)
    assert arrays["images"].dtype == np.uint8 and arrays["modality"].dtype == np.int32


def _malformed():
    proto = tf.make_tensor_proto(MODALITY)
    proto.tensor_shape.dim[0].size = 5  # two values for a shape of five
    return {"images": tf.make_tensor_proto(IMAGES), "modality": proto}


BAD_TENSORS = {
    "one input too many": (
        _protos(images=IMAGES, modality=MODALITY, extra=MODALITY),
        "input size does not match signature: 3!=2 len({extra,images,modality}) != len({images,modality}). "
        "Sent extra: {extra}. Missing but required: {}.",
    ),
    "one input too few": (
        _protos(images=IMAGES),
        "input size does not match signature: 1!=2 len({images}) != len({images,modality}). "
        "Sent extra: {}. Missing but required: {modality}.",
    ),
    "unknown name in place of one": (
        _protos(images=IMAGES, modality_=MODALITY),
        "input tensor alias not found in signature: modality_. Inputs expected to be in the set {images,modality}.",
    ),
    "wrong dtype": (
        _protos(images=IMAGES.astype(np.float32), modality=MODALITY),
        "Expects arg[images] to be uint8 but float is provided",
    ),
    "wrong shape": (
        _protos(images=IMAGES[..., :2], modality=MODALITY),
        "input images has shape [2, 4, 3, 2], the signature takes [-1, -1, -1, 3]",
    ),
    "malformed": (_malformed(), "input modality: malformed tensor"),
    "unequal batch sizes": (
        _protos(images=IMAGES, modality=MODALITY[:1]),
        "inputs have different batch sizes: {'images': 2, 'modality': 1}",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_mismatching_tensors_are_invalid_argument(case):
    tensors, message = BAD_TENSORS[case]
    with pytest.raises(ServingError) as info:
        parse_inputs(tensors, SPECS)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.message
