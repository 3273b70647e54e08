"""The training benchmark's profile: which ops are backward, forward or the optimizer."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

from bench_training import op_phase  # noqa: E402


@pytest.mark.parametrize(
    "name, phase",
    [
        ("gradient_tape/Tile", "backward"),
        ("StatefulPartitionedCall/gradient_tape_1/Mul", "backward"),
        ("conv2d_valid_stride1_grad/MatMul", "backward"),  # lba_tf.models.conv's own gradient
        ("lba/encoder/conv2d_valid_stride1_grad_3/Conv2D", "backward"),  # a repeated scope, numbered
        ("lba/encoder/layer1/conv1/Conv2D", "forward"),
        ("my_gradient_tape_copy/Mul", "forward"),  # only whole scope names count
        ("torch_sgd/Mul", "optimizer"),
    ],
)
def test_op_phase_from_the_name_scope(name, phase):
    assert op_phase(name) == phase
