"""Copy PyTorch weights onto the Keras model: torchvision ResNets and LbA training checkpoints.

Two checkpoint layouts are understood:

- a torchvision ResNet state dict (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...,
  ``fc.*``): the ImageNet initialisation, copied into both stems and the shared body;
- an LbA training checkpoint, a dict whose ``net`` entry is the state dict of the whole model:
  ``visible_module.visible.*`` and ``thermal_module.thermal.*`` (the stems),
  ``base_resnet.base.*`` (the shared body), ``bottleneck.*`` (the BNNeck) and ``classifier.*``.
  Each of these three modules holds a whole ResNet: the stems use only its conv1/bn1, the body
  only its layer1-4. The unused copies (the stems' layer1-4 and fc, the body's conv1/bn1) are
  skipped.

PyTorch is imported only inside ``load_torch_checkpoint``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from lba_tf.models.resnet import Bottleneck, depth_spec

LBA_VISIBLE_STEM = "visible_module.visible."
LBA_INFRARED_STEM = "thermal_module.thermal."
LBA_BODY = "base_resnet.base."
LBA_BNNECK = "bottleneck."
LBA_CLASSIFIER_WEIGHT = "classifier.weight"
_DATA_PARALLEL_PREFIX = "module."
_BATCH_COUNTER = "num_batches_tracked"

# How a torch tensor becomes a Keras variable value.
_CONV = "conv"  # OIHW -> HWIO
_LINEAR = "linear"  # [out, in] -> [in, out]
_COPY = "copy"


class WeightImportError(ValueError):
    """A checkpoint does not fit the model; lists every unknown, missing and mis-shaped tensor."""

    def __init__(self, unknown=(), missing=(), misshaped=(), message: str | None = None):
        self.unknown = tuple(unknown)
        self.missing = tuple(missing)
        self.misshaped = tuple(misshaped)
        lines = [message] if message else []
        if self.unknown:
            lines.append(f"{len(self.unknown)} unknown checkpoint tensors: {', '.join(self.unknown)}")
        if self.missing:
            lines.append(f"{len(self.missing)} tensors missing from the checkpoint: {', '.join(self.missing)}")
        if self.misshaped:
            lines.append(f"{len(self.misshaped)} mis-shaped tensors: {'; '.join(self.misshaped)}")
        super().__init__("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an assignment did with the checkpoint's tensors.

    Attributes:
        assigned: tensors copied into the model.
        unused: tensors skipped because the model has no use for them (torchvision's ``fc``; in
            an LbA checkpoint the stems' layer1-4 and fc and the body's conv1 and bn1).
        batch_counters: BatchNorm ``num_batches_tracked`` counters skipped.
    """

    assigned: int
    unused: int
    batch_counters: int


def _strip_data_parallel(key: str) -> str:
    return key[len(_DATA_PARALLEL_PREFIX) :] if key.startswith(_DATA_PARALLEL_PREFIX) else key


def checkpoint_kind(state_dict: Mapping[str, np.ndarray]) -> str:
    """``"torchvision"`` or ``"lba"`` for a state dict from ``load_torch_checkpoint``.

    Raises:
        WeightImportError: the keys match neither layout.
    """
    if "conv1.weight" in state_dict:
        return "torchvision"
    if any(key.startswith(LBA_BODY) for key in state_dict):
        return "lba"
    raise WeightImportError(
        message=f"neither a torchvision ResNet state dict (conv1.weight) nor an LbA checkpoint ({LBA_BODY}*)"
    )


def _numpy_globals() -> list:
    """What the numpy entries of a training checkpoint unpickle through, allowed by name.

    The LbA training script saves the CMC curve (an array) and mAP / mINP (numpy float64
    scalars) beside the state dict. Files written under numpy 1.x name the reconstructors
    ``numpy.core.multiarray.*``, under numpy 2.x ``numpy._core.multiarray.*``; both are allowed,
    with the dtypes an array or scalar can hold. Nothing else a pickle could call is.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"}
    allowed = [np.ndarray, np.dtype, *sorted(dtypes, key=lambda t: t.__name__)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    return allowed


def load_torch_checkpoint(path) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint into a flat ``{name: numpy array}`` dict.

    Accepts a torchvision ResNet state dict or an LbA training checkpoint (its ``net`` entry,
    beside which the training script keeps ``cmc``, ``mAP``, ``mINP`` and ``epoch``); a
    DataParallel ``module.`` prefix is removed. Loading uses ``weights_only=True``, allowing
    numpy arrays and scalars (:func:`_numpy_globals`) and nothing else beyond tensors.

    Args:
        path: a ``.pth`` / ``.t`` file written by ``torch.save``.

    Raises:
        WeightImportError: the file holds something else.
    """
    try:
        import torch
    except ImportError:
        raise WeightImportError(
            message=f"{path} is a PyTorch checkpoint and reading it needs torch: "
            "pip install torch==2.13.0 (or make install-torch)"
        ) from None
    with torch.serialization.safe_globals(_numpy_globals()):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("net", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise WeightImportError(message=f"{path}: expected a state dict, got {type(state).__name__}")
    not_tensors = sorted(key for key, value in state.items() if not torch.is_tensor(value))
    if not_tensors:
        raise WeightImportError(message=f"{path}: entries that are not tensors: {', '.join(map(str, not_tensors))}")
    arrays = {_strip_data_parallel(key): value.detach().cpu().numpy() for key, value in state.items()}
    checkpoint_kind(arrays)
    return arrays


def architecture_of(state_dict: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The model settings a checkpoint fixes: ``{"model.depth": ..., "model.width": ...}``.

    Read from the tensors: the stem's output channels give the width; the blocks of each stage
    and whether they are bottlenecks give the depth.

    Raises:
        WeightImportError: the tensors are of no ResNet this project builds.
    """
    torchvision = checkpoint_kind(state_dict) == "torchvision"
    body = "" if torchvision else LBA_BODY
    stem = "conv1.weight" if torchvision else LBA_VISIBLE_STEM + "conv1.weight"
    if stem not in state_dict:
        raise WeightImportError(missing=[stem])
    blocks = []
    for stage in range(1, 5):
        indices = {
            key[len(f"{body}layer{stage}.") :].split(".", 1)[0]
            for key in state_dict
            if key.startswith(f"{body}layer{stage}.")
        }
        blocks.append(len(indices))
    block_type = "bottleneck" if f"{body}layer1.0.conv3.weight" in state_dict else "basic"
    depth = next((d for d in (18, 34, 50) if depth_spec(d) == (block_type, tuple(blocks))), None)
    if depth is None:
        raise WeightImportError(
            message=f"a ResNet of {block_type} blocks {tuple(blocks)} per stage is none of ResNet-18, -34, -50"
        )
    return {"model.depth": depth, "model.width": int(state_dict[stem].shape[0])}


def check_fits(state_dict: Mapping[str, np.ndarray], config, source) -> None:
    """Raise a one-line error naming every setting of ``config`` the checkpoint contradicts.

    Raises:
        WeightImportError: e.g. ``best.t is a ResNet-50 of width 64, the config says
            model.depth=18, model.width=16``.
    """
    found = architecture_of(state_dict)
    differing = {key: value for key, value in found.items() if getattr(config.model, key.split(".", 1)[1]) != value}
    if differing:
        said = ", ".join(f"{key}={getattr(config.model, key.split('.', 1)[1])}" for key in differing)
        fix = " ".join(f"--set {key}={value}" for key, value in differing.items())
        raise WeightImportError(
            message=f"{source} is a ResNet-{found['model.depth']} of width {found['model.width']}, the "
            f"config says {said}: leave out --config to take the checkpoint's, or {fix}"
        )


def num_classes_in_checkpoint(state_dict: Mapping[str, np.ndarray]) -> int:
    """Number of training identities of an LbA checkpoint (rows of ``classifier.weight``)."""
    if LBA_CLASSIFIER_WEIGHT not in state_dict:
        raise WeightImportError(missing=[LBA_CLASSIFIER_WEIGHT])
    return int(state_dict[LBA_CLASSIFIER_WEIGHT].shape[0])


def _batch_norm_targets(prefix: str, batch_norm) -> dict:
    return {
        prefix + "weight": ([batch_norm.gamma], _COPY),
        prefix + "bias": ([batch_norm.beta], _COPY),
        prefix + "running_mean": ([batch_norm.moving_mean], _COPY),
        prefix + "running_var": ([batch_norm.moving_variance], _COPY),
    }


def _stem_targets(prefix: str, stem) -> dict:
    return {prefix + "conv1.weight": ([stem.conv1.kernel], _CONV), **_batch_norm_targets(prefix + "bn1.", stem.bn1)}


def _block_targets(prefix: str, block) -> dict:
    targets = {}
    for index in range(1, 4 if isinstance(block, Bottleneck) else 3):
        targets[f"{prefix}conv{index}.weight"] = ([getattr(block, f"conv{index}").kernel], _CONV)
        targets.update(_batch_norm_targets(f"{prefix}bn{index}.", getattr(block, f"bn{index}")))
    if block.projection:
        targets[prefix + "downsample.0.weight"] = ([block.downsample_conv.kernel], _CONV)
        targets.update(_batch_norm_targets(prefix + "downsample.1.", block.downsample_bn))
    return targets


def _body_targets(prefix: str, body) -> dict:
    targets = {}
    stages = (body.layer1, body.layer2, body.layer3, body.layer4)
    for stage_index, stage in enumerate(stages, start=1):
        for block_index, block in enumerate(stage.blocks):
            targets.update(_block_targets(f"{prefix}layer{stage_index}.{block_index}.", block))
    return targets


def _merge_targets(*target_dicts: dict) -> dict:
    """Union of target dicts; a key present in several feeds all their variables."""
    merged = {}
    for targets in target_dicts:
        for key, (variables, layout) in targets.items():
            merged_variables, _ = merged.get(key, ([], layout))
            merged[key] = (merged_variables + variables, layout)
    return merged


def _torch_shape(keras_shape, layout: str) -> tuple:
    shape = tuple(keras_shape)
    if layout == _CONV:
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == _LINEAR:
        return shape[::-1]
    return shape


def _to_keras(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == _CONV:
        return np.transpose(array, (2, 3, 1, 0))
    if layout == _LINEAR:
        return array.T
    return array


def _check_covers(targets: dict, layers) -> None:
    """Every variable of ``layers`` must be fed by some checkpoint tensor."""
    fed = {variable.path for variables, _ in targets.values() for variable in variables}
    unfed = sorted(v.path for layer in layers for v in layer.weights if v.path not in fed)
    if unfed:
        raise WeightImportError(message=f"model variables without a checkpoint tensor: {', '.join(unfed)}")


def _assign(targets: dict, state_dict: Mapping[str, np.ndarray], is_unused) -> ImportReport:
    """Check the whole checkpoint against ``targets``, then copy; nothing is copied on error."""
    counters = {key for key in state_dict if key.rsplit(".", 1)[-1] == _BATCH_COUNTER}
    unused = {key for key in state_dict if key not in counters and is_unused(key)}
    unknown = sorted(set(state_dict) - set(targets) - counters - unused)
    missing = sorted(set(targets) - set(state_dict))
    misshaped = []
    for key in sorted(set(targets) & set(state_dict)):
        variables, layout = targets[key]
        expected = _torch_shape(variables[0].shape, layout)
        if tuple(state_dict[key].shape) != expected:
            misshaped.append(f"{key} is {tuple(state_dict[key].shape)}, expected {expected}")
    if unknown or missing or misshaped:
        raise WeightImportError(unknown, missing, misshaped)
    for key, (variables, layout) in targets.items():
        value = _to_keras(np.asarray(state_dict[key]), layout)
        for variable in variables:
            variable.assign(value.astype(variable.dtype))
    return ImportReport(assigned=len(targets), unused=len(unused), batch_counters=len(counters))


def assign_torchvision_resnet(encoder, state_dict: Mapping[str, np.ndarray]) -> ImportReport:
    """Copy a torchvision ResNet's weights into both stems and the body of a ``TwoStreamEncoder``.

    ``fc.*`` and ``num_batches_tracked`` are skipped; any other unknown key, a missing key or a
    mis-shaped tensor raises before anything is copied.

    Args:
        encoder: a ``TwoStreamEncoder`` of the checkpoint's depth and width.
        state_dict: from ``load_torch_checkpoint`` (or any ``{name: array}`` in that layout).

    Raises:
        WeightImportError: listing every unknown, missing and mis-shaped tensor.
    """
    targets = _merge_targets(
        _stem_targets("", encoder.visible_stem),
        _stem_targets("", encoder.infrared_stem),
        _body_targets("", encoder.body),
    )
    _check_covers(targets, [encoder])
    return _assign(targets, state_dict, lambda key: key.startswith("fc."))


def _is_unused_lba_copy(key: str) -> bool:
    """The parts of the whole ResNets inside an LbA model that never run."""
    for stem in (LBA_VISIBLE_STEM, LBA_INFRARED_STEM):
        if key.startswith(stem):
            return key[len(stem) :].startswith(("layer", "fc."))
    return key.startswith((LBA_BODY + "conv1.", LBA_BODY + "bn1."))


def assign_lba_checkpoint(encoder, bnneck, classifier, state_dict: Mapping[str, np.ndarray]) -> ImportReport:
    """Copy an LbA training checkpoint into the encoder, BNNeck and identity classifier.

    The unused copies (the stems' layer1-4 and fc, the body's conv1 and bn1) and the
    ``num_batches_tracked`` counters are skipped and counted in the report; any other unknown
    key, a missing key or a mis-shaped tensor raises before anything is copied. Unbuilt heads are
    built for the encoder's layer4 channels.

    Args:
        encoder: a ``TwoStreamEncoder`` of the checkpoint's depth and width.
        bnneck: a ``BNNeck``.
        classifier: an ``IdentityClassifier`` with ``num_classes_in_checkpoint(state_dict)``
            classes.
        state_dict: from ``load_torch_checkpoint``.

    Raises:
        WeightImportError: listing every unknown, missing and mis-shaped tensor.
    """
    for head in (bnneck, classifier):
        if not head.built:
            head.build((None, encoder.layer4_channels))
    targets = {
        **_stem_targets(LBA_VISIBLE_STEM, encoder.visible_stem),
        **_stem_targets(LBA_INFRARED_STEM, encoder.infrared_stem),
        **_body_targets(LBA_BODY, encoder.body),
        **_batch_norm_targets(LBA_BNNECK, bnneck.batch_norm),
        LBA_CLASSIFIER_WEIGHT: ([classifier.kernel], _LINEAR),
    }
    _check_covers(targets, [encoder, bnneck, classifier])
    return _assign(targets, state_dict, _is_unused_lba_copy)


def convert(state: Mapping[str, np.ndarray], dst, config) -> ImportReport:
    """Convert a PyTorch checkpoint into Keras weights for the model ``config`` describes.

    A torchvision ResNet becomes the encoder's ImageNet initialisation (set ``model.pretrained``
    to ``dst``); an LbA checkpoint becomes the weights of the whole model, its number of
    identities read from the classifier (pass ``dst`` to ``--weights`` of evaluate or export).

    Args:
        state: from :func:`load_torch_checkpoint`.
        dst: the ``.weights.h5`` file to write.
        config: a :class:`lba_tf.config.Config` (depth, width, last stride, image size) that
            :func:`check_fits` the checkpoint.
    """
    from lba_tf.models.encoder import TwoStreamEncoder
    from lba_tf.models.lba import build_model

    model_cfg = config.model
    if checkpoint_kind(state) == "torchvision":
        target = TwoStreamEncoder(model_cfg.depth, model_cfg.width, model_cfg.last_stride, name="encoder")
        report = assign_torchvision_resnet(target, state)
    else:
        target = build_model(config.replace(**{"model.pretrained": None}), num_classes_in_checkpoint(state))
        report = assign_lba_checkpoint(target.encoder, target.bnneck, target.classifier, state)
    target.save_weights(str(dst))
    return report


def read_checkpoint(path, args):
    """``(state, config)`` of a PyTorch checkpoint for a command line's ``--config`` / ``--set``.

    Without ``--config`` the model is the checkpoint's (:func:`architecture_of`) in the paper's
    recipe, ``configs/base.yaml`` (288 x 144 images); with it, the config must fit the
    checkpoint. PyTorch and the config load before TensorFlow does.

    Raises:
        WeightImportError: the file is no checkpoint of ours, or the config contradicts it.
    """
    from lba_tf.cli import config_from_args
    from lba_tf.config import CONFIG_DIR

    state = load_torch_checkpoint(path)
    implied = [f"{key}={value}" for key, value in architecture_of(state).items()]
    config = config_from_args(args, default=CONFIG_DIR / "base.yaml", implied=implied)
    check_fits(state, config, path)
    return state, config


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from lba_tf.cli import add_config_arguments
    from lba_tf.log import logger

    parser = argparse.ArgumentParser(
        prog="python -m lba_tf.tools.import_torch",
        description="Convert a torchvision ResNet state dict (ImageNet initialisation of both stems and "
        "the body) or an LbA training checkpoint (the whole model) into Keras weights.",
    )
    parser.add_argument("src", help="PyTorch checkpoint (.pth, .pt, .t)")
    parser.add_argument("dst", help="Keras weights to write, ending in .weights.h5")
    add_config_arguments(parser)
    parser.epilog = (
        "Without --config the model is the checkpoint's own depth and width in the paper's "
        "recipe (configs/base.yaml); a --config that contradicts the checkpoint is refused."
    )
    args = parser.parse_args(argv)
    if not args.dst.endswith(".weights.h5"):
        parser.error(f"dst must end in .weights.h5, got {args.dst}")
    try:
        state, config = read_checkpoint(args.src, args)
        report = convert(state, args.dst, config)
    except (WeightImportError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logger.info(
        "wrote %s: %d tensors assigned, %d unused copies skipped, %d batch counters skipped",
        args.dst,
        report.assigned,
        report.unused,
        report.batch_counters,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
