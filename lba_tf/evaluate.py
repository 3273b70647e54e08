"""``python -m lba_tf.evaluate``: run a dataset's test protocol on trained weights, print and save the table.

``--weights`` takes a run directory (its last epoch's weights and its config, as the authors
report their last epoch; ``--best`` for the evaluation-time best, which was chosen on the test set
and is labelled so), a Keras ``.weights.h5`` file (from training or from
``python -m lba_tf.tools.import_torch``) or a ``.keras`` file. The query and gallery images of
every trial are embedded once; each trial is scored; the table of every trial, the mean and the
chance level is printed and written as JSON next to the weights; beside that file go the ranked
lists of a few fixed queries of each direction's first trial, as
``<its stem>_ranked_<direction>.png`` (``evaluation_ranked_infrared_to_visible.png`` in a run
directory; re-ranked evaluations show distances). A config that does not fit the
weights (a run's are evaluated with its model settings) and an output that cannot be written are
refused before TensorFlow starts.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from lba_tf.cli import (
    WeightsError,
    add_config_arguments,
    add_weights_arguments,
    load_model,
    start_runtime,
    weights_and_config,
    writable_problem,
)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def ranked_picture_path(output: pathlib.Path, direction: str) -> pathlib.Path:
    """Where the ranked lists of ``direction`` go, beside the results ``output``, named after it so
    that the evaluations of a run's last and best weights keep their own."""
    return output.with_name(f"{output.stem}_ranked_{direction}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    add_weights_arguments(parser, "a run directory, a .weights.h5 file or a .keras file")
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=None,
        metavar="N",
        help="trials per direction (default: data.eval_trials)",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="JSON output (default: <weights>.eval.json, or evaluation.json in a run directory); "
        "the ranked-list pictures go beside it, as <its stem>_ranked_<direction>.png",
    )
    parser.add_argument(
        "--cache-dir",
        default=".cache",
        metavar="DIR",
        help="where the synthetic dataset is generated (default: .cache)",
    )
    args = parser.parse_args(argv)
    try:
        source, config = weights_and_config(args)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weights = source.path
    output = (
        pathlib.Path(args.output)
        if args.output
        else (
            source.run.evaluation_path("best" if args.best else "last")
            if source.run
            else weights.with_name(weights.name.split(".")[0] + ".eval.json")
        )
    )
    problem = f"{output} is a directory" if output.is_dir() else writable_problem(output.parent)
    if problem:
        print(f"error: cannot write the results to {output}: {problem}; pass --output FILE", file=sys.stderr)
        return 2
    start_runtime(args)

    from lba_tf.data.datasets.registry import build_dataset
    from lba_tf.evaluation.ranked_lists import draw_ranked_lists, write_png
    from lba_tf.evaluation.results import format_table, results_json
    from lba_tf.evaluation.runner import evaluate_model
    from lba_tf.log import logger
    from lba_tf.runtime import set_tf32

    set_tf32(config.train.tf32)

    try:
        dataset = build_dataset(config.data, cache_dir=args.cache_dir)
    except ValueError as err:  # a DatasetError, or data.root unset for a real dataset
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = "data.root, or --cache-dir for the synthetic set"
        print(f"error: {err.strerror}: {err.filename} (the dataset's folder: {where})", file=sys.stderr)
        return 2
    try:
        model = load_model(source, config, source.num_classes or dataset.num_classes)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.time()
    results = evaluate_model(
        model,
        dataset,
        height=config.data.image_height,
        width=config.data.image_width,
        trials=args.trials or config.data.eval_trials,
        batch_size=config.eval.batch_size,
        rerank=config.eval.rerank,
        skip_corrupt=config.data.skip_corrupt,
    )
    logger.info("evaluated in %.1f s", time.time() - started)
    print(f"weights: {weights} ({source.choice})")
    print(format_table(results))
    payload = {
        "weights": str(weights),
        "weights_choice": source.choice,
        "config": config.name,
        "dataset": config.data.dataset,
        "rerank": config.eval.rerank,
        "results": results_json(results),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2))
    print(f"results: {output}")
    for direction, ranked in results.ranked_lists.items():
        if ranked.rows:
            picture = draw_ranked_lists(ranked, title=f"{direction}, {weights.name} ({source.choice})")
            print(f"ranked lists: {write_png(picture, ranked_picture_path(output, direction))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
