"""``python -m lba_tf.export``: trained weights -> ``<output>/<name>/<version>/``, a SavedModel for TF Serving.

``--weights`` takes a run directory (its last epoch's weights and its config; ``--best`` for the
best-on-test ones), a Keras ``.weights.h5`` or
``.keras`` file, or an LbA PyTorch checkpoint (recognised by content and converted through
``lba_tf.tools.import_torch``; without ``--config``, the checkpoint's model in the paper's
recipe, at 288 x 144). The export is checked before the command returns: the SavedModel
is reloaded and every signature is compared with the in-process model. The version directory
written is printed on the last line.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import zipfile


def is_torch_checkpoint(path: pathlib.Path) -> bool:
    """True for files ``torch.save`` writes: a zip archive holding ``data.pkl``, or a bare pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # pickle protocol marker of the legacy format


def main(argv: list[str] | None = None) -> int:
    from lba_tf.cli import WeightsError, add_config_arguments, add_weights_arguments, config_from_args, resolve_weights

    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    add_weights_arguments(parser, "a run directory, a .weights.h5 or .keras file, or an LbA PyTorch checkpoint")
    parser.add_argument("--output", default=None, metavar="DIR", help="export root (default: export.base_path)")
    parser.add_argument("--name", default=None, help="model name (default: export.name)")
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="version number (default: one more than the highest present)",
    )
    args = parser.parse_args(argv)
    if args.version is not None and args.version < 1:
        parser.error("--version must be a positive integer")
    path = pathlib.Path(args.weights)
    torch_source = path.is_file() and not path.name.endswith((".h5", ".keras")) and is_torch_checkpoint(path)
    if torch_source:
        from lba_tf.tools.import_torch import WeightImportError, read_checkpoint

        if args.best:
            parser.error("--best picks a run directory's best weights; a checkpoint is exported as it is")
        choice = "the checkpoint given"
        try:  # the model and the image size are the checkpoint's, unless --config says otherwise
            state, config = read_checkpoint(path, args)
        except WeightImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        try:
            source = resolve_weights(args.weights, args.config, args.best)
        except WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        path, args.config, num_classes, choice = source.path, source.config_path, source.num_classes, source.choice
        config = config_from_args(args)

    import keras

    from lba_tf.export.saved_model import ExportVerificationError, export_saved_model, verify_export
    from lba_tf.log import logger
    from lba_tf.models.lba import build_model
    from lba_tf.tools.import_torch import convert, num_classes_in_checkpoint

    logger.info("weights: %s (%s)", path, choice)
    config = config.replace(**{"model.pretrained": None})
    with tempfile.TemporaryDirectory() as tmp:
        if torch_source:
            converted = pathlib.Path(tmp) / "converted.weights.h5"
            convert(state, converted, config)
            path, num_classes = converted, num_classes_in_checkpoint(state)
        if path.suffix == ".keras":
            model = keras.saving.load_model(path)
        else:
            model = build_model(config, num_classes)
            model.load_weights(path)
    size = (config.data.image_height, config.data.image_width)
    out = export_saved_model(
        model,
        args.output or config.export.base_path,
        args.name or config.export.name,
        version=args.version,
        image_size=size,
    )
    try:
        diffs = verify_export(out, model, image_size=size)
    except ExportVerificationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logger.info("verified %d signatures, largest difference %.2g", len(diffs), max(diffs.values()))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
