"""Run every benchmark, each in a fresh process, and write ``results.json`` and ``results.md``.

    python benchmarks/run_all.py                 # everything, oneDNN off then on (about 30 minutes on 2 CPU cores)
    python benchmarks/run_all.py --only training_small pipeline --kernels 1

Each entry of :data:`SUITE` names a benchmark module and the arguments of its ``run``; a child
process (``run_all.py --child NAME --out FILE``) calls it, so TensorFlow state, dtype policies
and peak memory never leak from one benchmark into the next (each ResNet-50 training case has a
process of its own: the allocator keeps what a case freed, so a second case's peak would include
the first's). The Markdown report states the machine (CPU, cores, load, TensorFlow, XLA, oneDNN,
malloc), every table, and the issue's targets. ``--kernels`` runs the suite once per TensorFlow
CPU kernel path (``TF_ENABLE_ONEDNN_OPTS=0`` Eigen, ``=1`` oneDNN; both by default, whatever
this CPU's default), so the defaults each path leads to are measured on the same machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import MALLOC_ENV_VAR, machine_description, markdown_table  # noqa: E402

from lba_tf.runtime import onednn_expected  # noqa: E402

SUITE = {
    "training_large": ("bench_training", {"preset": "large_full"}),
    "training_large_baseline": ("bench_training", {"preset": "large_baseline"}),
    "training_other_conv_gradient": ("bench_training", {"preset": "large_other_gradient"}),
    "training_other_malloc": ("bench_training", {"preset": "large_baseline"}),
    "training_small": ("bench_training", {"preset": "small"}),
    "pipeline": ("bench_pipeline", {"height": 288, "width": 144, "steps": 20, "warmup": 3, "repeats": 3}),
    "inference": ("bench_inference", {"images": 24, "batch_sizes": (1, 8, 16, 32)}),
    "serving": (
        "bench_serving",
        {"model": "lba-tiny", "image_size": (288, 144), "clients": (1, 4), "requests": 20, "batch_sizes": (1, 16)},
    ),
    "evaluation": ("bench_evaluation", {"repeats": 2}),
    "memory": ("bench_memory", {"requests": 10_000}),
}
"""Benchmark name -> (module in ``benchmarks/``, keyword arguments of its ``run``)."""


def child_env(name: str, kernels: str | None) -> dict[str, str]:
    """Environment variables of benchmark ``name``'s process, beside this one's: the kernel path,
    and for ``training_other_malloc`` the allocator that path does not use by default."""
    env = {} if kernels is None else {"TF_ENABLE_ONEDNN_OPTS": kernels}
    if name == "training_other_malloc":
        onednn = onednn_expected({**os.environ, **env})
        env[MALLOC_ENV_VAR] = "tuned" if onednn else "system"
    return env


KERNELS = {"0": "oneDNN off", "1": "oneDNN on"}
"""``TF_ENABLE_ONEDNN_OPTS`` values -> how the report names them."""

RATIOS = (
    (
        "Conv input gradient, this kernel path's default vs the other, R50 full method",
        "training_large",
        "training_other_conv_gradient",
    ),
    (
        "Allocator, this kernel path's default (lba_tf.runtime) vs the other, R50 baseline",
        "training_large_baseline",
        "training_other_malloc",
    ),
)
"""(what, the default's training benchmark, the same case the other way) for the ratio lines."""

TRAINING_TARGET = 0.70
SYSU_TARGET_SECONDS = 2.0
SERVING_OVERHEAD_TARGET = 0.20


def run_child(name: str, out: str) -> None:
    module, kwargs = SUITE[name]
    result = importlib.import_module(module).run(**kwargs)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def result_key(name: str, kernels: str | None) -> str:
    """The key of benchmark ``name`` run with ``TF_ENABLE_ONEDNN_OPTS=kernels`` in the results."""
    return name if kernels is None else f"{name} ({KERNELS[kernels]})"


def run_suite(names: list[str], kernels: list[str | None]) -> dict:
    """Every named benchmark in its own process, once per kernel path; results (or the error)
    by :func:`result_key`, each with its ``name`` and ``kernels``."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, name in [(mode, name) for mode in kernels for name in names]:
            key = result_key(name, mode)
            out = os.path.join(tmp, f"{name}-{mode}.json")
            print(f"== {key}", flush=True)
            env = {**os.environ, **child_env(name, mode)}
            start = time.perf_counter()
            process = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", name, "--out", out],
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            seconds = time.perf_counter() - start
            if process.returncode == 0:
                with open(out) as f:
                    results[key] = json.load(f)
            else:
                tail = "\n".join(process.stderr.strip().splitlines()[-5:])
                results[key] = {"bench": name, "error": tail, "rows": [], "notes": []}
                print(tail, file=sys.stderr)
            results[key].update(seconds=seconds, name=name, kernels=mode)
            print(f"   {seconds:.0f} s", flush=True)
    return results


def _training_rows(result: dict) -> list[dict]:
    rows = []
    for row in result.get("rows", []):
        if "error" in row:
            rows.append({"case": row["case"], "images/s": "error: " + row["error"][:80]})
            continue
        rows.append(
            {
                "case": row["case"],
                "step s": row["step_seconds"],
                "images/s": row["images_per_s"],
                "GFLOP/image": row["gflop_per_image"],
                "GFLOP/s": row["achieved_gflops"],
                "efficiency": f"{row['efficiency']:.1%}",
                "forward s": row.get("forward_seconds"),
                "first step s": row["first_step_seconds"],
                "peak RSS MiB": row["peak_rss_mb"],
            }
        )
    return rows


def _profile_section(result: dict) -> list[str]:
    lines = []
    for row in result.get("rows", []):
        profile = row.get("profile")
        if not profile:
            continue
        lines += [
            f"Profile of one step of {row['case']} (op self-time summed over threads: "
            f"{profile['op_seconds']:.1f} s; wall {profile['wall_seconds']:.1f} s):",
            "",
        ]
        for key, title in (("phases", "phase"), ("categories", "category"), ("top_ops", "op type")):
            lines += [
                markdown_table(
                    [{title: e["name"], "seconds": e["seconds"], "share": f"{e['share']:.1%}"} for e in profile[key]]
                ),
                "",
            ]
        seconds = {e["name"]: e["seconds"] for e in profile["top_ops"]}
        rates = [
            {
                "op type": kind,
                "GFLOP/step": gflop * row["images_per_step"],
                "seconds": seconds[kind],
                "GFLOP/s": gflop * row["images_per_step"] / seconds[kind],
            }
            for kind, gflop in row["gflop_by_op"].items()
            if seconds.get(kind)
        ]
        if rates:
            lines += [
                "Rate of each conv/matmul op type in that step (its counted FLOPs over its op time):",
                "",
                markdown_table(rates),
                "",
            ]
    return lines


def _images_per_s(results: dict, name: str) -> float | None:
    """The images/s of a one-case training benchmark (``None`` if it did not run or failed)."""
    rows = [row for row in results.get(name, {}).get("rows", []) if "images_per_s" in row]
    return rows[0]["images_per_s"]["median"] if rows else None


def _targets(results: dict) -> list[str]:
    """The target lines of each kernel path's results, prefixed with the path when there are two."""
    groups: dict = {}
    for key, result in results.items():
        groups.setdefault(result.get("kernels"), {})[result.get("name", key)] = result
    return [
        line.replace("- ", f"- {KERNELS[mode]}: ", 1) if len(groups) > 1 else line
        for mode, group in groups.items()
        for line in _targets_of(group)
    ]


def _targets_of(results: dict) -> list[str]:
    """The target lines of one kernel path's results, by benchmark name."""
    lines = []
    # the targets apply to the defaults; the other ResNet-50 runs are there for their ratios
    training = [
        row for name in ("training_large", "training_large_baseline") for row in results.get(name, {}).get("rows", [])
    ]
    for what, default, other in RATIOS:
        fast, slow = _images_per_s(results, default), _images_per_s(results, other)
        if fast and slow:
            lines.append(f"- {what}: {fast:.3g} vs {slow:.3g} images/s (x{fast / slow:.2f}).")
    for row in training:
        if "efficiency" in row and row["case"].startswith("R50"):
            verdict = "met" if row["efficiency"] >= TRAINING_TARGET else "NOT met (see the profile)"
            lines.append(
                f"- Training efficiency, {row['case']}: {row['efficiency']:.1%} of the "
                f"measured matmul rate (target {TRAINING_TARGET:.0%}): {verdict}."
            )
    for row in results.get("evaluation", {}).get("rows", []):
        if row["case"].startswith("sysu: metrics"):
            seconds = row["seconds"]["median"]
            verdict = "met" if seconds < SYSU_TARGET_SECONDS else "NOT met"
            lines.append(
                f"- SYSU-MM01 protocol ({row['case']}, {row['queries']} queries) from "
                f"features: {seconds:.2f} s (target < {SYSU_TARGET_SECONDS:.0f} s): {verdict}."
            )
    for name in ("inference", "serving"):
        for row in results.get(name, {}).get("rows", []):
            if row.get("batch") == 16 and row["path"] in ("served / in-process", "overhead"):
                ratio = row.get("p50_ms", row.get("p50"))
                verdict = "met" if ratio - 1 < SERVING_OVERHEAD_TARGET else "NOT met"
                model = results[name]["settings"]["model"]
                size = "x".join(map(str, results[name]["settings"]["image_size"]))
                clients = row.get("clients", 1)
                lines.append(
                    f"- Serving overhead at batch 16 ({name}: {model} {size}, {clients} "
                    f"client{'s' if clients > 1 else ''}): p50 latency "
                    f"served / in-process = {ratio:.2f} ({ratio - 1:+.0%}; target < "
                    f"{SERVING_OVERHEAD_TARGET:.0%}): {verdict}."
                )
    for note in results.get("memory", {}).get("notes", []):
        lines.append(f"- Memory: {note}.")
    return lines


def render_markdown(machine: dict, results: dict, command: str, total_seconds: float) -> str:
    """The report: machine, targets, then one section per benchmark."""
    out = [
        "# lba_tf benchmarks",
        "",
        f"Produced by `{command}` (`make bench`) in {total_seconds / 60:.1f} minutes on "
        f"{machine['date']}. Every timed figure is the median of repeated runs after warm-up, "
        "written `median (min-max, n=runs)`.",
        "",
        "## Machine",
        "",
        markdown_table(
            [{"field": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else v} for k, v in machine.items()]
        ),
        "",
        "The load average (1, 5, 15 minutes) was taken at the start and at the end; the "
        "benchmarks alone keep it near the number of cores, more means other jobs shared "
        "them, which lowers absolute rates more than ratios measured in the same process "
        "(efficiency, serving overhead).",
        "",
        "## Targets",
        "",
        *_targets(results),
        "",
    ]
    titles = {
        "training_large": "Training: ResNet-50, 288 x 144, P=8, K=4",
        "training_large_baseline": "Training: ResNet-50, 288 x 144, P=8, K=4, baseline",
        "training_other_conv_gradient": (
            "Training: ResNet-50, 288 x 144, with the conv input gradient that is not the default"
        ),
        "training_other_malloc": "Training: ResNet-50, 288 x 144, baseline, with the allocator that is not the default",
        "training_small": "Training: reduced size (ResNet-18 width 16, 64 x 32)",
        "pipeline": "Input pipeline alone",
        "inference": "Inference: exported SavedModel",
        "serving": "Serving stack vs in-process (bench_serving.py)",
        "evaluation": "Evaluation from features",
        "memory": "Memory",
    }
    for key, result in results.items():
        name, mode = result.get("name", key), result.get("kernels")
        env = " ".join(f"{k}={v}" for k, v in child_env(name, mode).items())
        heading = titles.get(name, name) + ("" if mode is None else f" ({KERNELS[mode]})")
        ran = result.get("settings", {}).get("onednn_enabled")
        out += [
            f"## {heading}",
            "",
            f"`{SUITE[name][0]}.run(**{SUITE[name][1]})`{' with ' + env if env else ''}, "
            f"{result['seconds']:.0f} s" + ("" if ran is None else f", oneDNN {'on' if ran else 'off'}") + ".",
            "",
        ]
        if result.get("error"):
            out += ["Failed:", "", "```", result["error"], "```", ""]
            continue
        if name.startswith("training"):
            rate = result["settings"]["matmul_gflops"]
            out += [
                f"Matmul rate ({result['settings']['matmul']}, before and after the cases): "
                f"{rate['median']:.1f} GFLOP/s (min {rate['min']:.1f}, max {rate['max']:.1f}).",
                "",
                markdown_table(_training_rows(result)),
                "",
                *_profile_section(result),
            ]
        else:
            out += [markdown_table(result["rows"]), ""]
        if name == "inference":
            out += [f"Server memory at the end: {result['settings']['server']}.", ""]
        out += [f"- {note}" for note in result.get("notes", [])] + [""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SUITE), help="a subset of the suite")
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=sorted(KERNELS) + ["default"],
        default=sorted(KERNELS),
        help="TF_ENABLE_ONEDNN_OPTS values to run the suite with, or 'default' for this machine's own (default: 0 1)",
    )
    parser.add_argument("--output-dir", default=HERE, help="where results.md and results.json go")
    parser.add_argument(
        "--render", action="store_true", help="rewrite results.md from the results.json already in --output-dir"
    )
    parser.add_argument("--child", choices=sorted(SUITE), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.out)
        return
    if args.render:
        with open(os.path.join(args.output_dir, "results.json")) as f:
            saved = json.load(f)
        with open(os.path.join(args.output_dir, "results.md"), "w") as f:
            f.write(render_markdown(saved["machine"], saved["results"], saved["command"], saved["total_seconds"]))
        return
    machine = machine_description()
    start = time.perf_counter()
    kernels = [None if mode == "default" else mode for mode in args.kernels]
    results = run_suite(args.only or list(SUITE), kernels)
    total = time.perf_counter() - start
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    command = (
        "python benchmarks/run_all.py"
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + f" --kernels {' '.join(args.kernels)}"
    )
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"machine": machine, "command": command, "total_seconds": total, "results": results}, f, indent=1)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(render_markdown(machine, results, command, total))
    print(f"wrote {args.output_dir}/results.md and results.json ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
