"""``python -m lba_tf.evaluate``: run a dataset's test protocol on trained weights, print and save the table.

``--weights`` takes a run directory (its last epoch's weights and its config, as the authors
report their last epoch; ``--best`` for the evaluation-time best, which was chosen on the test set
and is labelled so), a Keras ``.weights.h5`` file (from training or from
``python -m lba_tf.tools.import_torch``) or a ``.keras`` file. The query and gallery images of
every trial are embedded once; each trial is scored; the table of every trial, the mean and the
chance level is printed and written as JSON next to the weights.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


LAST_EPOCH = "last epoch"
BEST_ON_TEST = "best on the test set (chosen by the evaluations during training: optimistic)"
GIVEN_FILE = "the file given"


def resolve_weights(weights: str, config_path: str | None, best: bool = False
                    ) -> tuple[pathlib.Path, str | None, int | None, str]:
    """(weights file, config file, number of classes if known, which weights) for ``--weights``.

    A run directory gives its ``weights/last.weights.h5`` (the last epoch, what the authors
    report), or with ``best`` its ``weights/best.weights.h5``, the epoch whose evaluation on the
    test set scored highest, which overstates accuracy and is labelled ``BEST_ON_TEST``.
    """
    path = pathlib.Path(weights)
    if path.is_dir():
        run_info = path / "run.json"
        num_classes = json.loads(run_info.read_text())["num_classes"] if run_info.exists() else None
        name, choice = ("best", BEST_ON_TEST) if best else ("last", LAST_EPOCH)
        found = path / "weights" / f"{name}.weights.h5"
        if not found.exists():
            raise SystemExit(f"error: {path} has no weights/{name}.weights.h5 (is it a finished run directory?)")
        return found, config_path or str(path / "config.yaml"), num_classes, choice
    if best:
        raise SystemExit(f"error: --best picks a run directory's best weights; {path} is not a run directory")
    if not path.exists():
        raise SystemExit(f"error: weights not found: {path}")
    if not (path.name.endswith(".weights.h5") or path.suffix == ".keras"):
        raise SystemExit(f"error: --weights must be a run directory, a .weights.h5 or a .keras file: {path}")
    return path, config_path, None, GIVEN_FILE


def add_best_argument(parser: argparse.ArgumentParser) -> None:
    """``--best``: a run directory's best-on-test weights instead of its last epoch's."""
    parser.add_argument("--best", action="store_true",
                        help="with a run directory: weights/best.weights.h5, the epoch that scored highest "
                             "on the test set during training (optimistic, labelled so) instead of the last "
                             "epoch's")


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
    add_best_argument(parser)
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="trials per direction (default: data.eval_trials)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="JSON output (default: <weights>.eval.json, or evaluation.json in a run directory)")
    parser.add_argument("--cache-dir", default=".cache", metavar="DIR",
                        help="where the synthetic dataset is generated (default: .cache)")
    args = parser.parse_args(argv)
    weights, args.config, num_classes, choice = resolve_weights(args.weights, args.config, args.best)
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
    print(f"weights: {weights} ({choice})")
    print(format_table(results))
    run_dir = pathlib.Path(args.weights).is_dir()
    output = pathlib.Path(args.output) if args.output else (
        weights.parent.parent / ("evaluation-best-on-test.json" if args.best else "evaluation.json") if run_dir
        else weights.with_name(weights.name.split(".")[0] + ".eval.json"))
    payload = {"weights": str(weights), "weights_choice": choice, "config": config.name,
               "dataset": config.data.dataset, "rerank": config.eval.rerank, "results": results_json(results)}
    output.write_text(json.dumps(payload, indent=2))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
