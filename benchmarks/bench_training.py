"""Training throughput, counted FLOPs and efficiency against the measured matmul rate.

Each case builds the model and optimizer of the recipe (``configs/base.yaml`` with the case's
depth, width, image size, P, K and method), wraps the training step the trainer runs
(``lba_tf.training.step.train_step``) in a ``tf.function`` (XLA on or off for the whole step)
and times it on a fixed random batch of 2PK images, after warm-up. The FLOPs of one step are
counted from the static shapes of the conv and matmul ops in the step's graph (forward, both
gradients of every conv, and the functions it calls), so ``GFLOP/image x images/s`` is the
achieved rate; over the rate of a large float32 ``tf.matmul`` measured in the same process it
says how close the step is to the hardware.
``--profile`` traces one extra step with ``tf.profiler`` and sums op self-times by op type.

    python benchmarks/bench_training.py --preset small
    python benchmarks/bench_training.py --depth 50 --image-size 288 144 --method full --steps 2 --profile
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# common first: it tunes the C allocator before TensorFlow loads (lba_tf.runtime)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import allocator_mode, count_graph_flops, op_category, peak_rss_mb, record, scale, summarize, time_calls  # noqa: E402

from lba_tf.models.conv import GRADIENT_SCOPE, fast_gradient_applies, input_gradient  # noqa: E402

SYSU_TRAIN_IDS = 395
"""Classifier outputs: the training identities of SYSU-MM01."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured training configuration.

    Attributes:
        depth: ResNet depth.
        width: ResNet stem channels.
        height: image height.
        image_width: image width.
        P: identities per batch.
        K: images per identity and modality (the batch is 2PK images).
        method: ``"baseline"`` or ``"full"``.
        xla: compile the whole training step with XLA.
        precision: a Keras dtype policy, ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        warmup: untimed steps first (the first also traces and, with XLA, compiles).
        steps: timed steps.
        forward: also time the forward pass (losses, no gradient) alone.
        profile: trace one more step and summarise its ops by type.
        conv_gradient: ``"auto"``, the default of this machine's kernels; ``"fast"``, the
            convolutions' input gradient of ``lba_tf.models.conv``; ``"native"``, TensorFlow's
            ``Conv2DBackpropInput``; ``"other"``, whichever of the two is not the default.
    """

    depth: int = 50
    width: int = 64
    height: int = 288
    image_width: int = 144
    P: int = 8
    K: int = 4
    method: str = "full"
    xla: bool = False
    precision: str = "float32"
    warmup: int = 1
    steps: int = 2
    forward: bool = False
    profile: bool = False
    conv_gradient: str = "auto"

    @property
    def name(self) -> str:
        return (
            f"R{self.depth}w{self.width} {self.height}x{self.image_width} P{self.P}K{self.K} "
            f"{self.method} xla={'on' if self.xla else 'off'} {self.precision}"
            + ("" if self.conv_gradient == "auto" else f" {self.conv_gradient}-conv-grad")
        )


def _other_gradient() -> str:
    """The conv input gradient this machine's kernels do not use by default."""
    return "native" if fast_gradient_applies() else "fast"


_LARGE = {
    "large_full": Case(method="full", warmup=1, steps=2, profile=True),
    "large_baseline": Case(method="baseline", warmup=1, steps=2),
    "large_other_gradient": Case(method="full", warmup=1, steps=2, conv_gradient="other"),
}

PRESETS = {
    "large": list(_LARGE.values()),
    **{name: [case] for name, case in _LARGE.items()},
    "small": [
        Case(depth=18, width=16, height=64, image_width=32, method=m, warmup=2, steps=8) for m in ("full", "baseline")
    ]
    + [Case(depth=18, width=16, height=64, image_width=32, method="baseline", xla=True, warmup=2, steps=8)]
    + [
        Case(depth=18, width=16, height=64, image_width=32, method=m, precision="mixed_bfloat16", warmup=1, steps=3)
        for m in ("full", "baseline")
    ],
}
"""``large``: the recipe's ResNet-50 at 288 x 144, P=8, K=4 (the full method also with the conv input
gradient that is not this machine's default, for the ratio), and ``large_full``,
``large_baseline``, ``large_other_gradient`` its cases one by one (``run_all.py`` runs each in
a process of its own, and ``large_baseline`` once more with ``LBA_TF_MALLOC=system`` for the
allocator's ratio); ``small``: ResNet-18 width 16 at 64 x 32.

The full method's step with XLA on is left out of ``small``: on this CPU its compilation had not
finished after 5 minutes (``--method full --xla on`` measures it).
"""


def recipe_config(case: Case):
    """``configs/base.yaml`` with the case's model and batch."""
    from lba_tf.config import load_config

    return load_config(
        os.path.join(ROOT, "configs", "base.yaml"),
        [
            f"model.depth={case.depth}",
            f"model.width={case.width}",
            f"model.method={case.method}",
            f"data.image_height={case.height}",
            f"data.image_width={case.image_width}",
            f"data.num_identities={case.P}",
            f"data.num_instances={case.K}",
            f"train.precision={case.precision}",
        ],
    )


def synthetic_batch(case: Case, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Random normalised images ``[2PK, H, W, 3]`` and identity-major labels ``[2PK]``."""
    images = tf.random.stateless_normal([2 * case.P * case.K, case.height, case.image_width, 3], seed=[seed, 0])
    labels = np.tile(np.repeat(np.arange(case.P, dtype=np.int32), case.K), 2)
    return images, tf.constant(labels)


def build_training_step(case: Case):
    """The recipe's model, optimizer and the trainer's step as a ``tf.function``.

    The step is ``lba_tf.training.step.train_step`` itself, so the benchmark times the code the
    trainer runs.

    Returns:
        ``(step, model)``; ``step((images, labels))`` returns the trainer's logs.
    """
    import keras

    from lba_tf.models.lba import build_model
    from lba_tf.training.optimizer import build_optimizer
    from lba_tf.training.step import train_step

    config = recipe_config(case)
    keras.mixed_precision.set_dtype_policy(case.precision)
    try:
        model = build_model(config, SYSU_TRAIN_IDS)
        optimizer = build_optimizer(config.train, steps_per_epoch=1000)
        optimizer.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    step = tf.function(functools.partial(train_step, model, optimizer), jit_compile=case.xla)
    return step, model


def count_step_flops(step, batch) -> dict:
    """:func:`common.count_graph_flops` of the training step with TensorFlow's own conv gradients.

    A separate trace, so that the count is the model's, whichever input gradient is timed.
    """
    with input_gradient("native"):
        return count_graph_flops(tf.function(step.python_function).get_concrete_function(batch).graph)


def matmul_rate(size: int = 2048, repeats: int = 5, inner: int = 3) -> dict:
    """GFLOP/s of a float32 ``[size, size] x [size, size]`` ``tf.matmul`` (each sample ``inner`` calls)."""
    a = tf.random.stateless_normal([size, size], seed=[1, 0])
    b = tf.random.stateless_normal([size, size], seed=[2, 0])

    def calls():
        for _ in range(inner):
            tf.matmul(a, b).numpy()

    seconds = time_calls(calls, repeats, warmup=1)
    return scale(summarize(seconds), inner * 2 * size**3 / 1e9, invert=True)


def _xplane_op_times(logdir: str) -> dict[tuple[str, str], float]:
    """Self-time in seconds of every TF op event of a ``tf.profiler`` trace, by (name, type)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    times: dict[tuple[str, str], float] = {}
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                ops = []
                for event in line.events:
                    meta = plane.event_metadata[event.metadata_id]
                    if meta.display_name and ":" in meta.name:  # "scope/name:Type"
                        ops.append((event.offset_ps, event.duration_ps, meta.name, meta.display_name))
                ops.sort()
                stack: list[list] = []  # [end, name, type, self_ps]
                for start, duration, name, kind in ops:
                    while stack and stack[-1][0] <= start:
                        _, n, k, own = stack.pop()
                        times[(n, k)] = times.get((n, k), 0.0) + own / 1e12
                    if stack:
                        stack[-1][3] -= duration
                    stack.append([start + duration, name, kind, duration])
                for _, n, k, own in stack:
                    times[(n, k)] = times.get((n, k), 0.0) + own / 1e12
    return times


_BACKWARD_SCOPE = re.compile(rf"(^|/)(gradient_tape|{GRADIENT_SCOPE})(_\d+)?/")
"""The name scopes of gradient ops (TensorFlow numbers a repeated scope ``_1``, ``_2``...)."""


def op_phase(name: str) -> str:
    """``forward``, ``backward`` or ``optimizer`` from an op's name in the training step graph."""
    if _BACKWARD_SCOPE.search(name):
        return "backward"
    if name.startswith(("torch_sgd", "loss_scale_optimizer", "SGD")):
        return "optimizer"
    return "forward"


def summarize_profile(times: dict[tuple[str, str], float], top: int = 12) -> dict:
    """Op self-times summed by op type, by category (:func:`common.op_category`) and by phase."""
    total = sum(times.values()) or 1.0
    by_type: dict[str, float] = {}
    by_category: dict[str, float] = {}
    by_phase: dict[str, float] = {}
    for (name, kind), seconds in times.items():
        by_type[kind] = by_type.get(kind, 0.0) + seconds
        by_category[op_category(kind)] = by_category.get(op_category(kind), 0.0) + seconds
        by_phase[op_phase(name)] = by_phase.get(op_phase(name), 0.0) + seconds

    def shares(values: dict[str, float], limit: int | None = None) -> list[dict]:
        ranked = sorted(values.items(), key=lambda kv: -kv[1])[:limit]
        return [{"name": k, "seconds": v, "share": v / total} for k, v in ranked]

    return {
        "op_seconds": total,
        "top_ops": shares(by_type, top),
        "categories": shares(by_category),
        "phases": shares(by_phase),
    }


def profile_step(step, batch) -> dict:
    """Trace one call of ``step(batch)`` and summarise it (see :func:`summarize_profile`)."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            start = time.perf_counter()
            float(step(batch)["total"])
            wall = time.perf_counter() - start
        finally:
            tf.profiler.experimental.stop()
        summary = summarize_profile(_xplane_op_times(logdir))
    summary["wall_seconds"] = wall
    return summary


def measure_case(case: Case) -> dict:
    """Time, count and optionally profile one case; a result row."""
    if case.conv_gradient == "other":
        case = dataclasses.replace(case, conv_gradient=_other_gradient())
    with input_gradient(case.conv_gradient):  # every trace of the case happens inside
        return _measure_case(case)


def _measure_case(case: Case) -> dict:
    step, model = build_training_step(case)
    batch = synthetic_batch(case)
    images_per_step = 2 * case.P * case.K
    flops = count_step_flops(step, batch)
    start = time.perf_counter()
    timed_graph = step.get_concrete_function(batch).graph
    trace_seconds = time.perf_counter() - start
    first = time.perf_counter()
    float(step(batch)["total"])
    first_step = time.perf_counter() - first
    row: dict = {
        "case": case.name,
        "images_per_step": images_per_step,
        "conv_gradient": "fast" if fast_gradient_applies() else "native",
    }
    seconds = time_calls(lambda: float(step(batch)["total"]), case.steps, warmup=max(case.warmup - 1, 0))
    row["step_seconds"] = summarize(seconds)
    row["images_per_s"] = scale(row["step_seconds"], images_per_step, invert=True)
    row["gflop_per_image"] = flops["total"] / images_per_step / 1e9
    # per op type as the timed step runs them (its conv input gradients may be matmuls)
    row["gflop_by_op"] = {k: v / images_per_step / 1e9 for k, v in count_graph_flops(timed_graph)["by_type"].items()}
    row["uncounted_ops"] = len(flops["unknown"])
    row["achieved_gflops"] = scale(row["images_per_s"], row["gflop_per_image"])
    row["trace_seconds"] = trace_seconds
    row["first_step_seconds"] = first_step
    if case.forward:
        images, labels = batch
        forward = tf.function(lambda x, y: model.compute_losses(x, y, training=True)["total"], jit_compile=case.xla)
        row["forward_seconds"] = summarize(time_calls(lambda: float(forward(images, labels)), case.steps, warmup=1))
    row["peak_rss_mb"] = peak_rss_mb()  # the steps alone, before the profiler's
    if case.profile:
        row["profile"] = profile_step(step, batch)
        row["profile"]["peak_rss_mb"] = peak_rss_mb()
    return row


def run(
    cases: list[Case] | None = None, preset: str = "small", matmul_size: int = 2048, matmul_repeats: int = 5
) -> dict:
    """Measure the matmul rate, every case, then the matmul rate again; the result record.

    Each row's ``efficiency`` is its achieved GFLOP/s over the median of all matmul samples.
    """
    label = preset if cases is None else "custom"
    cases = list(PRESETS[preset] if cases is None else cases)
    before = matmul_rate(matmul_size, matmul_repeats)
    rows = []
    for case in cases:
        print(f"[training] {case.name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(measure_case(case))
        except (tf.errors.OpError, NotImplementedError, ValueError) as err:
            rows.append({"case": case.name, "error": f"{type(err).__name__}: {str(err)[:300]}"})
    after = matmul_rate(matmul_size, matmul_repeats)
    rate = summarize(before["samples"] + after["samples"])
    for row in rows:
        if "achieved_gflops" in row:
            row["efficiency"] = row["achieved_gflops"]["median"] / rate["median"]
    settings = {
        "preset": label,
        "malloc": allocator_mode(),
        "matmul": f"float32 {matmul_size}x{matmul_size} tf.matmul",
        "matmul_gflops": rate,
        "matmul_gflops_before": before,
        "matmul_gflops_after": after,
        "cases": [dataclasses.asdict(c) for c in cases],
    }
    return record("training", settings, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a set of cases (default: one case from the options below)",
    )
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, nargs=2, default=(288, 144), metavar=("H", "W"))
    parser.add_argument("-P", type=int, default=8)
    parser.add_argument("-K", type=int, default=4)
    parser.add_argument("--method", choices=("full", "baseline"), nargs="+", default=["full"])
    parser.add_argument("--xla", choices=("off", "on"), nargs="+", default=["off"])
    parser.add_argument(
        "--precision", nargs="+", default=["float32"], choices=("float32", "mixed_bfloat16", "mixed_float16")
    )
    parser.add_argument(
        "--conv-gradient",
        nargs="+",
        default=["auto"],
        choices=("auto", "fast", "native", "other"),
        help="conv input gradient: this machine's default, lba_tf.models.conv's or TensorFlow's",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--forward", action="store_true", help="also time the forward pass alone")
    parser.add_argument("--profile", action="store_true", help="trace one step, summarise by op")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--json", help="write the result record here")
    parser.add_argument(
        "--determinism",
        choices=("on", "off"),
        default="on",
        help="TensorFlow's op determinism, as train.deterministic sets it (default on, as training runs)",
    )
    args = parser.parse_args(argv)
    from lba_tf.runtime import set_determinism

    set_determinism(args.determinism == "on")
    cases = None
    if args.preset is None:
        cases = [
            Case(
                args.depth,
                args.width,
                *args.image_size,
                args.P,
                args.K,
                method,
                xla == "on",
                precision,
                args.warmup,
                args.steps,
                args.forward,
                args.profile,
                gradient,
            )
            for method in args.method
            for xla in args.xla
            for precision in args.precision
            for gradient in args.conv_gradient
        ]
    result = run(cases, args.preset or "small", args.matmul_size)
    result["settings"]["determinism"] = args.determinism
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"matmul {result['settings']['matmul_gflops']['median']:.1f} GFLOP/s")
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['case']}: {row['error']}")
            continue
        print(
            f"{row['case']}: {row['images_per_s']['median']:.2f} images/s, "
            f"{row['gflop_per_image']:.2f} GFLOP/image, "
            f"{row['achieved_gflops']['median']:.1f} GFLOP/s, efficiency {row['efficiency']:.0%}"
        )
        if "profile" in row:
            for key in ("categories", "phases", "top_ops"):
                print(f"  {key}: " + ", ".join(f"{e['name']} {e['share']:.0%}" for e in row["profile"][key]))


if __name__ == "__main__":
    main()
