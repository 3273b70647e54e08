"""``python -m lba_tf.evaluate``: run a dataset's test protocol on trained weights, print and save the table.

``--weights`` takes a run directory (its best weights and its config), a Keras ``.weights.h5``
file (from training or from ``python -m lba_tf.tools.import_torch``) or a ``.keras`` file. The
query and gallery images of every trial are embedded once; each trial is scored; the table of
every trial, the mean and the chance level is printed and written as JSON next to the weights.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


def resolve_weights(weights: str, config_path: str | None) -> tuple[pathlib.Path, str | None, int | None]:
    """(weights file, config file, number of classes if known) for a ``--weights`` argument."""
    path = pathlib.Path(weights)
    if path.is_dir():
        run_info = path / "run.json"
        num_classes = json.loads(run_info.read_text())["num_classes"] if run_info.exists() else None
        candidates = [path / "weights" / "best.weights.h5", path / "weights" / "last.weights.h5"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise SystemExit(f"error: {path} has no weights/best.weights.h5 or weights/last.weights.h5")
        return found, config_path or str(path / "config.yaml"), num_classes
    if not path.exists():
        raise SystemExit(f"error: weights not found: {path}")
    if not (path.name.endswith(".weights.h5") or path.suffix == ".keras"):
        raise SystemExit(f"error: --weights must be a run directory, a .weights.h5 or a .keras file: {path}")
    return path, config_path, None


def classes_in_weights(path: pathlib.Path) -> int | None:
    """The classifier's output size stored in a Keras weights file, if there is one."""
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(obj.shape[-1])
                     if "classifier" in name and hasattr(obj, "shape") and len(obj.shape) == 2 else None)
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    from lba_tf.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m lba_tf.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, metavar="PATH",
                        help="a run directory, a .weights.h5 file or a .keras file")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="trials per direction (default: data.eval_trials)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="JSON output (default: <weights>.eval.json, or evaluation.json in a run directory)")
    parser.add_argument("--cache-dir", default=".cache", metavar="DIR",
                        help="where the synthetic dataset is generated (default: .cache)")
    args = parser.parse_args(argv)
    weights, args.config, num_classes = resolve_weights(args.weights, args.config)
    config = config_from_args(args)

    import keras

    from lba_tf.data.datasets.registry import build_dataset
    from lba_tf.evaluation.runner import evaluate_model, format_table, results_json
    from lba_tf.log import logger
    from lba_tf.models.lba import build_model
    from lba_tf.runtime import set_tf32

    set_tf32(config.train.tf32)

    dataset = build_dataset(config.data, cache_dir=args.cache_dir)
    if weights.suffix == ".keras":
        model = keras.saving.load_model(weights)
    else:
        num_classes = num_classes or classes_in_weights(weights) or dataset.num_classes
        model = build_model(config.replace(**{"model.pretrained": None}), num_classes)
        model.load_weights(weights)
    started = time.time()
    results = evaluate_model(model, dataset, height=config.data.image_height, width=config.data.image_width,
                             trials=args.trials or config.data.eval_trials, batch_size=config.eval.batch_size,
                             rerank=config.eval.rerank, skip_corrupt=config.data.skip_corrupt)
    logger.info("evaluated in %.1f s", time.time() - started)
    print(format_table(results))
    output = pathlib.Path(args.output) if args.output else (
        weights.parent.parent / "evaluation.json" if pathlib.Path(args.weights).is_dir()
        else weights.with_name(weights.name.split(".")[0] + ".eval.json"))
    payload = {"weights": str(weights), "config": config.name, "dataset": config.data.dataset,
               "rerank": config.eval.rerank, "results": results_json(results)}
    output.write_text(json.dumps(payload, indent=2))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
