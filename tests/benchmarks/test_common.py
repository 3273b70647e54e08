"""The pure helpers of ``benchmarks/common.py``: statistics, tables and FLOP counting."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

import common  # noqa: E402

tf = pytest.importorskip("tensorflow")


def test_summarize_median_and_spread():
    s = common.summarize([3.0, 1.0, 2.0, 10.0])
    assert s["median"] == 2.5  # mean of the two middle values 2 and 3
    assert (s["min"], s["max"], s["n"]) == (1.0, 10.0, 4)
    assert s["spread"] == pytest.approx((10.0 - 1.0) / 2.5)
    single = common.summarize([4.0])
    assert (single["median"], single["spread"]) == (4.0, 0.0)
    with pytest.raises(ValueError):
        common.summarize([])


def test_scale_to_rate_inverts_each_sample():
    seconds = common.summarize([2.0, 4.0, 8.0])
    rate = common.scale(seconds, 64, invert=True)  # images per second of 64-image steps
    assert rate["samples"] == [32.0, 16.0, 8.0]
    assert rate["median"] == 16.0
    assert common.scale(seconds, 0.5)["samples"] == [1.0, 2.0, 4.0]


def test_time_calls_counts_warmup_and_repeats():
    calls = []
    seconds = common.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_format_and_markdown_table():
    s = common.summarize([1.0, 2.0, 3.0])
    assert common.format_summary(s) == "2 (1-3, n=3)"
    table = common.markdown_table([{"a": 1, "b": s}, {"a": 0.5}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 (1-3, n=3) |", "| 0.5 |  |"]


def test_op_category():
    assert common.op_category("Conv2DBackpropInput") == "conv/matmul"
    assert common.op_category("RsqrtGrad") == "batchnorm/elementwise"
    assert common.op_category("Tile") == "data movement"
    assert common.op_category("SomethingNew") == "other"


def _graph_of(fn, *specs):
    return tf.function(fn).get_concrete_function(*specs).graph


def test_conv_flops_forward_and_both_gradients():
    # 3x3 conv, 2 -> 5 channels, on [1, 4, 4, 2] with "SAME": out [1, 4, 4, 5];
    # each output value is 3 * 3 * 2 = 18 multiply-adds: 2 * 80 * 18 = 2880 FLOPs
    kernel = tf.Variable(tf.ones([3, 3, 2, 5]))

    def forward(x):
        return tf.nn.conv2d(x, kernel, 1, "SAME")

    spec = tf.TensorSpec([1, 4, 4, 2])
    counted = common.count_graph_flops(_graph_of(forward, spec))
    assert counted["by_type"] == {"Conv2D": 2880} and counted["unknown"] == []

    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(forward(x))
        return tape.gradient(y, [x, kernel])

    counted = common.count_graph_flops(_graph_of(train, spec))
    assert counted["by_type"] == {"Conv2D": 2880, "Conv2DBackpropInput": 2880, "Conv2DBackpropFilter": 2880}
    assert counted["total"] == 3 * 2880


def test_strided_conv_flops():
    # 1x1 conv stride 2 on [2, 6, 6, 3] -> [2, 3, 3, 4]: 72 outputs x 3 MACs = 432 FLOPs
    kernel = tf.ones([1, 1, 3, 4])
    counted = common.count_graph_flops(
        _graph_of(lambda x: tf.nn.conv2d(x, kernel, 2, "VALID"), tf.TensorSpec([2, 6, 6, 3]))
    )
    assert counted["total"] == 2 * 2 * 3 * 3 * 4 * 3


def test_matmul_flops_with_transpose_and_nested_function():
    # [5, 7] x [7, 3]: 2 * 5 * 3 * 7 = 210; the transposed product [7, 5]^T x [7, 3] the same
    inner = tf.function(lambda a, b: tf.matmul(a, b, transpose_a=True))

    def fn(a, b, c):
        return tf.matmul(a, b), inner(c, b)

    counted = common.count_graph_flops(
        _graph_of(fn, tf.TensorSpec([5, 7]), tf.TensorSpec([7, 3]), tf.TensorSpec([7, 5]))
    )
    assert counted["by_type"] == {"MatMul": 420}


def test_batch_matmul_flops():
    # [4, 2, 6] x [4, 6, 3]: 4 * 2 * 3 outputs x 6 MACs x 2 = 288
    counted = common.count_graph_flops(
        _graph_of(lambda a, b: tf.linalg.matmul(a, b), tf.TensorSpec([4, 2, 6]), tf.TensorSpec([4, 6, 3]))
    )
    assert counted["total"] == 288


def test_dynamic_shapes_are_reported_not_guessed():
    counted = common.count_graph_flops(
        _graph_of(lambda a, b: tf.matmul(a, b), tf.TensorSpec([None, 7]), tf.TensorSpec([7, 3]))
    )
    assert counted["total"] == 0 and len(counted["unknown"]) == 1


def test_machine_description_fields():
    info = common.machine_description()
    assert info["cores"] >= 1 and info["tensorflow"] == tf.__version__
    assert isinstance(info["xla_built"], bool) and isinstance(info["onednn_enabled"], bool)
    assert len(info["load_average"]) == 3
    # importing common tunes the allocator where oneDNN is off (glibc, Linux)
    assert info["malloc"] == ("system" if info["onednn_enabled"] else "tuned")
