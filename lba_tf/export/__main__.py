"""``python -m lba_tf.export``: trained weights -> ``<output>/<name>/<version>/``, a SavedModel for TF Serving.

``--weights`` takes a run directory (its last epoch's weights and its config; ``--best`` for the
best-on-test ones), a Keras ``.weights.h5`` or
``.keras`` file, or an LbA PyTorch checkpoint (recognised by content and converted through
``lba_tf.tools.import_torch``; without ``--config``, the checkpoint's model in the paper's
recipe, at 288 x 144). The export is checked before it is published: the SavedModel, still
under a hidden name, is reloaded and every signature is compared with the in-process model;
only then is it renamed to its version directory, printed on the last line. A config that does
not fit the weights, a version that exists and an output that cannot be written are refused
before TensorFlow starts (exit 2); an export failing its check publishes nothing (exit 1).
"""

from __future__ import annotations

import argparse
import os
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


def destination_problem(model_dir: str, version: int | None) -> str | None:
    """Why the export cannot be written under ``model_dir`` (as ``version``, if given), or None."""
    from lba_tf.cli import writable_problem
    from lba_tf.export.versions import next_version, version_problem

    problem = writable_problem(model_dir)
    if problem:
        return f"cannot write the export under {model_dir}: {problem}; pass --output a writable directory"
    taken = version_problem(model_dir, version) if version is not None else None
    if taken:
        return f"{taken}: leave out --version to write the next one ({next_version(model_dir)}), or pass another"
    return None


def main(argv: list[str] | None = None) -> int:
    from lba_tf.cli import (
        WeightsError,
        WeightsSource,
        add_config_arguments,
        add_weights_arguments,
        load_model,
        start_runtime,
        weights_and_config,
    )

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
    if torch_source and args.best:
        parser.error("--best picks a run directory's best weights; a checkpoint is exported as it is")
    try:
        if torch_source:
            from lba_tf.tools.import_torch import WeightImportError, read_checkpoint

            try:  # the model and the image size are the checkpoint's, unless --config says otherwise
                state, config = read_checkpoint(path, args)
            except WeightImportError as err:
                raise WeightsError(str(err)) from None
        else:
            source, config = weights_and_config(args)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    base, name = args.output or config.export.base_path, args.name or config.export.name
    problem = destination_problem(os.path.join(base, name), args.version)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    start_runtime(args)

    from lba_tf.export.saved_model import ExportVerificationError, export_saved_model
    from lba_tf.log import logger
    from lba_tf.tools.import_torch import convert

    config = config.replace(**{"model.pretrained": None})
    with tempfile.TemporaryDirectory() as tmp:
        if torch_source:
            converted = pathlib.Path(tmp) / "converted.weights.h5"
            convert(state, converted, config)
            source = WeightsSource(converted, None, "the checkpoint given")
        logger.info("weights: %s (%s)", path if torch_source else source.path, source.choice)
        try:
            model = load_model(source, config)
        except WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    size = (config.data.image_height, config.data.image_width)
    try:
        out = export_saved_model(model, base, name, version=args.version, image_size=size)
    except ExportVerificationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a version published meanwhile, or the disk
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
