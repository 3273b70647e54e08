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

from lba_tf.cli import WeightsError, add_weights_arguments, resolve_weights


def main(argv: list[str] | None = None) -> int:
    from lba_tf.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    add_weights_arguments(parser, "a run directory, a .weights.h5 file or a .keras file")
    parser.add_argument(
        "--trials", type=int, default=None, metavar="N", help="trials per direction (default: data.eval_trials)"
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="JSON output (default: <weights>.eval.json, or evaluation.json in a run directory)",
    )
    parser.add_argument(
        "--cache-dir",
        default=".cache",
        metavar="DIR",
        help="where the synthetic dataset is generated (default: .cache)",
    )
    args = parser.parse_args(argv)
    try:
        source = resolve_weights(args.weights, args.config, args.best)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.config = source.config_path
    config = config_from_args(args)

    import keras

    from lba_tf.data.datasets.registry import build_dataset
    from lba_tf.evaluation.results import format_table, results_json
    from lba_tf.evaluation.runner import evaluate_model
    from lba_tf.log import logger
    from lba_tf.models.lba import build_model
    from lba_tf.runtime import set_tf32

    set_tf32(config.train.tf32)

    dataset = build_dataset(config.data, cache_dir=args.cache_dir)
    weights = source.path
    if weights.suffix == ".keras":
        model = keras.saving.load_model(weights)
    else:
        model = build_model(config.replace(**{"model.pretrained": None}), source.num_classes or dataset.num_classes)
        model.load_weights(weights)
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
    output = (
        pathlib.Path(args.output)
        if args.output
        else (
            source.run.evaluation_path("best" if args.best else "last")
            if source.run
            else weights.with_name(weights.name.split(".")[0] + ".eval.json")
        )
    )
    payload = {
        "weights": str(weights),
        "weights_choice": source.choice,
        "config": config.name,
        "dataset": config.data.dataset,
        "rerank": config.eval.rerank,
        "results": results_json(results),
    }
    output.write_text(json.dumps(payload, indent=2))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
