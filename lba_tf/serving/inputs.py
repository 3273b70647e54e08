"""Request tensors checked against a signature's inputs, with TF Serving's messages, as numpy."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from lba_tf.serving.errors import invalid_argument


def dtype_name(dtype: int) -> str:
    """TensorFlow's C++ name of a DataType enum (``DT_FLOAT`` -> ``float``), as TF Serving reports it."""
    return types_pb2.DataType.Name(dtype)[3:].lower() if dtype in types_pb2.DataType.values() else str(dtype)


def parse_inputs(
    tensors: Mapping[str, tf.compat.v1.TensorProto], specs: Mapping[str, tf.TensorSpec]
) -> dict[str, np.ndarray]:
    """Check request tensors against a signature's inputs and convert them to numpy.

    Args:
        tensors: the request's ``inputs`` map of ``TensorProto``.
        specs: the signature's inputs by name.

    Returns:
        numpy arrays by input name, all with the same batch size.

    Raises:
        ServingError: INVALID_ARGUMENT for a wrong number of inputs, an unknown name, a wrong dtype, a shape
            the signature does not accept, a malformed tensor or unequal batch sizes.
    """
    # the order and messages of TF Serving's checks: the input count first
    # (servables/tensorflow/predict_util.cc), then each alias (TensorFlow's saved_model GetInputValues)
    sent, wanted = sorted(tensors), sorted(specs)
    if len(sent) != len(wanted):
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
            f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."
        )
    for name in sent:
        if name not in specs:
            raise invalid_argument(
                f"input tensor alias not found in signature: {name}. "
                f"Inputs expected to be in the set {{{','.join(wanted)}}}."
            )
    arrays = {}
    for name, spec in specs.items():
        proto = tensors[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise invalid_argument(
                f"Expects arg[{name}] to be {dtype_name(spec.dtype.as_datatype_enum)} "
                f"but {dtype_name(proto.dtype)} is provided"
            )
        try:
            array = tf.make_ndarray(proto)
        except Exception as err:  # malformed content: a size that does not match the shape, ...
            raise invalid_argument(f"input {name}: malformed tensor: {err}") from None
        if not spec.shape.is_compatible_with(array.shape):
            raise invalid_argument(
                f"input {name} has shape {list(array.shape)}, the signature takes "
                f"{[d if d is not None else -1 for d in spec.shape.as_list()]}"
            )
        arrays[name] = array
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise invalid_argument(f"inputs have different batch sizes: {sizes}")
    return arrays
