"""Shared pieces of the benchmarks: the machine description, timing statistics, FLOP counting.

Every benchmark's ``run(...)`` returns a record ``{"bench": name, "settings": {...},
"rows": [{...}, ...], "notes": [...]}``; ``benchmarks/run_all.py`` gathers them with
:func:`machine_description` into ``results.json`` and renders ``results.md`` with
:func:`markdown_table`. A timed figure is a :func:`summarize` dict: the median of repeated runs
after warm-up, with the min, max and relative spread ``(max - min) / median``.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from lba_tf.runtime import ENV_VAR as MALLOC_ENV_VAR  # noqa: F401 (run_all sets it)
from lba_tf.runtime import allocator_mode, onednn_enabled, tune_allocator

tune_allocator()  # as the training and serving programs do; import this module before TensorFlow

CONV_MATMUL_OPS = frozenset(
    {
        "Conv2D",
        "Conv2DBackpropInput",
        "Conv2DBackpropFilter",
        "MatMul",
        "BatchMatMul",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "_FusedConv2D",
        "_FusedMatMul",
    }
)
"""Op types whose FLOPs :func:`count_graph_flops` counts (the work a matmul unit does)."""

_CATEGORIES = (
    ("conv/matmul", CONV_MATMUL_OPS),
    (
        "batchnorm/elementwise",
        frozenset(
            {
                "Mul",
                "AddV2",
                "Add",
                "Sub",
                "RealDiv",
                "Rsqrt",
                "RsqrtGrad",
                "SquaredDifference",
                "Relu",
                "ReluGrad",
                "Square",
                "Pow",
                "Neg",
                "Maximum",
                "Minimum",
                "AddN",
                "BiasAdd",
                "BiasAddGrad",
                "Cast",
                "Exp",
                "Log",
                "Sqrt",
                "Reciprocal",
                "FusedBatchNormV3",
                "FusedBatchNormGradV3",
                "DivNoNan",
                "Softmax",
                "LogSoftmax",
                "Sign",
                "Abs",
                "Greater",
                "GreaterEqual",
                "Less",
                "Equal",
                "SelectV2",
                "Select",
                "ZerosLike",
                "OnesLike",
                "Fill",
                "FloorDiv",
                "FloorMod",
                "Xlogy",
                "SparseSoftmaxCrossEntropyWithLogits",
            }
        ),
    ),
    ("reductions", frozenset({"Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "ArgMin"})),
    (
        "data movement",
        frozenset(
            {
                "Pad",
                "PadV2",
                "MirrorPad",
                "Tile",
                "Reshape",
                "Transpose",
                "ConcatV2",
                "Slice",
                "StridedSlice",
                "StridedSliceGrad",
                "Identity",
                "Pack",
                "Unpack",
                "GatherV2",
                "ScatterNd",
                "Squeeze",
                "ExpandDims",
                "BroadcastTo",
                "Split",
                "SplitV",
                "Reverse",
                "ReverseV2",
                "DynamicStitch",
                "DynamicPartition",
                "TensorScatterUpdate",
                "_Recv",
                "_Send",
            }
        ),
    ),
    ("pooling", frozenset({"MaxPool", "MaxPoolGrad", "AvgPool", "AvgPoolGrad"})),
    (
        "variables/optimizer",
        frozenset(
            {
                "ReadVariableOp",
                "AssignVariableOp",
                "AssignAddVariableOp",
                "AssignSubVariableOp",
                "ResourceApplyGradientDescent",
                "ResourceApplyKerasMomentum",
                "VarHandleOp",
            }
        ),
    ),
    ("xla cluster", frozenset({"XlaLaunch", "_XlaRun", "_XlaCompile", "XlaLaunchV2"})),
)


def op_category(op_type: str) -> str:
    """The profile category of a TensorFlow op type (``"other"`` when none fits)."""
    for name, types in _CATEGORIES:
        if op_type in types:
            return name
    return "other"


def summarize(samples: Sequence[float]) -> dict:
    """Median of ``samples`` and its spread.

    Args:
        samples: one value per measured run (after warm-up).

    Returns:
        ``{"median", "min", "max", "spread", "n", "samples"}``, ``spread`` being
        ``(max - min) / median`` (0 for a single sample).
    """
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("summarize needs at least one sample")
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else 0.0
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread": spread,
        "n": len(values),
        "samples": values,
    }


def scale(summary: Mapping, factor: float, invert: bool = False) -> dict:
    """A :func:`summarize` dict of each sample times ``factor`` (``factor / sample`` if ``invert``).

    ``invert`` turns seconds per run into a rate: ``scale(seconds, images, invert=True)`` is
    images per second, with its own median and spread.
    """
    return summarize([factor / v if invert else factor * v for v in summary["samples"]])


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def format_summary(summary: Mapping, digits: int = 3) -> str:
    """``median (min-max, n=N)`` for a table cell."""
    f = f"{{:.{digits}g}}"
    if summary["n"] == 1:
        return f.format(summary["median"])
    return f"{f.format(summary['median'])} ({f.format(summary['min'])}-{f.format(summary['max'])}, n={summary['n']})"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def proc_memory_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A memory field of ``/proc/<pid>/status`` in MiB: ``VmRSS`` (resident now), ``VmHWM`` (peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def current_rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now, MiB."""
    return proc_memory_mb(pid, "VmRSS")


def _static_shape(tensor) -> list[int] | None:
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        return None
    return shape.as_list()


def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def op_flops(op) -> int | None:
    """Multiply-add FLOPs (2 per MAC) of one conv or matmul op from its static shapes.

    Conv2D and both of its gradients cost ``2 * |output of the forward conv| * kh * kw * C_in``
    (each gradient is the same contraction, re-associated); MatMul costs ``2 * M * N * K``.

    Args:
        op: a ``tf.Operation`` of a type in :data:`CONV_MATMUL_OPS`.

    Returns:
        The FLOPs, or ``None`` when a needed shape is not static.
    """
    kind = op.type
    if kind in ("Conv2D", "_FusedConv2D"):
        out, kernel = _static_shape(op.outputs[0]), _static_shape(op.inputs[1])
        return None if out is None or kernel is None else 2 * _prod(out) * _prod(kernel[:3])
    if kind == "Conv2DBackpropInput":  # inputs: input_sizes, filter, out_backprop
        grad, kernel = _static_shape(op.inputs[2]), _static_shape(op.inputs[1])
        return None if grad is None or kernel is None else 2 * _prod(grad) * _prod(kernel[:3])
    if kind == "Conv2DBackpropFilter":  # inputs: input, filter_sizes, out_backprop
        grad, kernel = _static_shape(op.inputs[2]), _static_shape(op.outputs[0])
        return None if grad is None or kernel is None else 2 * _prod(grad) * _prod(kernel[:3])
    a, out = _static_shape(op.inputs[0]), _static_shape(op.outputs[0])
    if a is None or out is None:
        return None
    if kind in ("MatMul", "_FusedMatMul"):
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        return 2 * _prod(out) * inner
    adjoint = op.get_attr("adj_x")  # BatchMatMul*: [..., M, K] x [..., K, N]
    return 2 * _prod(out) * (a[-2] if adjoint else a[-1])


def _called_graphs(op) -> list:
    """FuncGraphs an op calls: the body of a (Stateful)PartitionedCall, the branches of an If."""
    names = []
    for attr in ("f", "then_branch", "else_branch"):
        try:
            names.append(op.get_attr(attr).name)
        except ValueError:
            continue
    graphs = []
    for name in names:
        function = op.graph._get_function(name)  # noqa: SLF001 (no public lookup by name)
        if function is not None and getattr(function, "graph", None) is not None:
            graphs.append(function.graph)
    return graphs


def count_graph_flops(graph) -> dict:
    """Conv and matmul FLOPs of every op of a graph, including the functions it calls.

    Args:
        graph: a ``tf.Graph``, e.g. ``tf_function.get_concrete_function(...).graph``.

    Returns:
        ``{"total": FLOPs, "by_type": {op type: FLOPs}, "unknown": [names of ops whose
        shapes were not static]}``. Both branches of an ``If`` are counted, so a graph whose
        convolutions sit in a conditional is over-counted; the LbA training step has none.
    """
    by_type: dict[str, int] = {}
    unknown: list[str] = []
    pending = [graph]
    while pending:
        current = pending.pop()
        for op in current.get_operations():
            pending.extend(_called_graphs(op))
            if op.type not in CONV_MATMUL_OPS:
                continue
            flops = op_flops(op)
            if flops is None:
                unknown.append(op.name)
                continue
            by_type[op.type] = by_type.get(op.type, 0) + flops
    return {"total": sum(by_type.values()), "by_type": by_type, "unknown": unknown}


def _cpu_info() -> tuple[str, list[str]]:
    """The CPU model name and which vector extensions of interest ``/proc/cpuinfo`` lists."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = fields.get("flags", "").split()
    wanted = [f for f in flags if f in ("avx", "avx2", "fma", "f16c", "avx_vnni") or f.startswith(("avx512", "amx"))]
    return fields.get("model name", platform.processor() or "unknown"), wanted


def machine_description() -> dict:
    """CPU model and vector extensions, cores, memory, load, TensorFlow version, XLA and oneDNN."""
    import keras
    import tensorflow as tf

    model, flags = _cpu_info()
    try:
        with open("/proc/meminfo") as f:
            mem_gb = int(f.readline().split()[1]) / 2**20
    except OSError:
        mem_gb = float("nan")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": model,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "xla_built": bool(tf.test.is_built_with_xla()),
        "xla_auto_clustering": os.environ.get("TF_XLA_FLAGS", ""),
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"),
        "onednn_enabled": onednn_enabled(),
        "malloc": allocator_mode() or "system",
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); :func:`summarize` values become ``median (min-max)``."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if isinstance(value, Mapping) and "median" in value:
            return format_summary(value)
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def record(bench: str, settings: Mapping, rows: Sequence[Mapping], notes: Sequence[str] = ()) -> dict:
    """The dict every benchmark's ``run`` returns; its settings say which kernels ran."""
    return {
        "bench": bench,
        "settings": {**settings, "onednn_enabled": onednn_enabled()},
        "rows": list(rows),
        "notes": list(notes),
    }
