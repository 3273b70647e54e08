"""The configuration schema: every section and field of a run, its type, range and meaning.

The dataclasses carry no default values: ``configs/base.yaml`` holds the recipe, and every field
must be set there (a test checks it), so the defaults are written once. Ranges are field metadata
(:func:`_range`), checked by :mod:`lba_tf.config.loader` with the types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """Field metadata: the value must lie in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    return field(metadata={"lo": lo, "hi": hi, "lo_open": lo_open})


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic dataset (``lba_tf.data.synthetic``), generated on first use.

    Attributes:
        num_train_ids: identities drawn for training, at least 2.
        num_test_ids: identities drawn for testing, at least 2.
        images_per_camera: images of each identity per camera (six cameras, two infrared),
            at least 1.
        image_height: height of the generated images in pixels, at least 16 (the pipeline then
            resizes them to ``data.image_height``).
        image_width: width of the generated images in pixels, at least 8.
        seed: seed of the drawing, at least 0; the same seed gives byte-identical files.
    """

    num_train_ids: int = _range(2)
    num_test_ids: int = _range(2)
    images_per_camera: int = _range(1)
    image_height: int = _range(16)
    image_width: int = _range(8)
    seed: int = _range(0)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (``lba_tf.data.augment``); the paper uses only the horizontal flip.

    Attributes:
        flip_prob: probability of mirroring an image left-right, in [0, 1].
        pad_crop: pixels of zero padding on every side before a random crop back to the image
            size, at least 0; 0 turns it off.
        random_erasing: probability of erasing a random rectangle of an image, in [0, 1];
            0 turns it off.
        channel_augmentation: probability that a visible (RGB) image becomes one of its channels
            repeated three times (CAJ's channel exchange), in [0, 1]; 0 turns it off.
    """

    flip_prob: float = _range(0.0, 1.0)
    pad_crop: int = _range(0)
    random_erasing: float = _range(0.0, 1.0)
    channel_augmentation: float = _range(0.0, 1.0)


@dataclass(frozen=True)
class DataConfig:
    """Dataset, batch composition (P identities x K images per modality) and test protocol.

    Attributes:
        dataset: the dataset read, one of ``"synthetic"``, ``"sysu"`` (SYSU-MM01), ``"regdb"``,
            ``"llcm"``.
        root: the dataset folder in the layout its owners distribute, or null; null is an error
            for a real dataset and means the generated set for ``"synthetic"``.
        image_height: height in pixels every image is resized to, at least 16 (288 in LbA).
        image_width: width in pixels every image is resized to, at least 8 (144 in LbA).
        num_identities: P, identities per training batch, at least 2.
        num_instances: K, images per identity and modality in a training batch, at least 1; a
            batch holds 2 * P * K images.
        search_mode: SYSU-MM01's gallery cameras, ``"all"`` (cameras 1, 2, 4, 5) or
            ``"indoor"`` (cameras 1, 2).
        gallery_shots: gallery images per identity and camera in SYSU-MM01 and LLCM,
            ``"single"`` (one) or ``"multi"`` (ten).
        trial: the RegDB split trained on, in [1, 10].
        eval_trials: random galleries (SYSU-MM01, LLCM) or RegDB splits evaluated and averaged,
            in [1, 10].
        skip_corrupt: true skips undecodable images and reports how many; false stops on the
            first one.
        augment: the training augmentation.
        synthetic: the synthetic set generated when ``dataset`` is ``"synthetic"`` and ``root``
            is null.
    """

    dataset: Literal["synthetic", "sysu", "regdb", "llcm"]
    root: str | None
    image_height: int = _range(16)
    image_width: int = _range(8)
    num_identities: int = _range(2)
    num_instances: int = _range(1)
    search_mode: Literal["all", "indoor"]
    gallery_shots: Literal["single", "multi"]
    trial: int = _range(1, 10)
    eval_trials: int = _range(1, 10)
    skip_corrupt: bool
    augment: AugmentConfig
    synthetic: SyntheticConfig


@dataclass(frozen=True)
class ModelConfig:
    """The two-stream ResNet encoder, the alignment module and the heads.

    Attributes:
        depth: ResNet depth, one of 18, 34, 50 (50 in LbA).
        width: channels of the stem, at least 1 (64 in torchvision's ResNet); layer ``i``
            (1..4) has ``width * 2**(i - 1)`` channels, times 4 for depth 50.
        last_stride: stride of layer4, 1 (keeps layer3's resolution, as LbA) or 2.
        method: ``"baseline"`` (ID + triplet losses) or ``"full"`` (LbA: cross-modal alignment
            of layer3 and layer4 with the ID-consistency and dense triplet losses).
        gem_p: exponent of the generalized-mean pooling, > 0 (1 is average pooling).
        temperature: tau of the softmax over matching similarities in the alignment, > 0.
        dt_reduction: how the dense triplet loss is averaged, ``"official"`` (as the released
            code, which gives the published numbers) or ``"paper"`` (as the paper writes it).
        pretrained: the encoder's initialisation for training: a Keras weights file (ImageNet,
            from ``python -m lba_tf.tools.import_torch``) or ``"random"``; null stops training
            (see :func:`lba_tf.config.check_initialisation`).
    """

    depth: Literal[18, 34, 50]
    width: int = _range(1)
    last_stride: Literal[1, 2]
    method: Literal["baseline", "full"]
    gem_p: float = _range(0.0, lo_open=True)
    temperature: float = _range(0.0, lo_open=True)
    dt_reduction: Literal["paper", "official"]
    pretrained: str | None


@dataclass(frozen=True)
class LossConfig:
    """Loss margins and weights (total = ID + triplet + ic * (IC3 + IC4) + dt * (DT3 + DT4)).

    Attributes:
        triplet_margin: margin of the batch-hard triplet loss on pooled features, at least 0.
        dense_triplet_margin: margin of the dense triplet loss on aligned feature maps, at
            least 0.
        dense_triplet_weight: dt, the weight of the dense triplet losses DT3 + DT4, at least 0.
        id_consistency_weight: ic, the weight of the ID-consistency losses IC3 + IC4 of the
            reconstructed maps, at least 0.
    """

    triplet_margin: float = _range(0.0)
    dense_triplet_margin: float = _range(0.0)
    dense_triplet_weight: float = _range(0.0)
    id_consistency_weight: float = _range(0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, learning-rate schedule, distribution, checkpoints.

    Attributes:
        epochs: epochs to train, at least 1.
        lr: base learning rate of the BNNeck and classifier, > 0; the backbone's is
            ``lr * backbone_lr_scale``.
        backbone_lr_scale: factor of the backbone's learning rate over ``lr``, at least 0.
        momentum: SGD momentum, in [0, 1].
        nesterov: Nesterov momentum (needs a non-zero ``momentum``).
        weight_decay: coefficient of the coupled L2 penalty added to every gradient, as
            ``torch.optim.SGD``'s ``weight_decay``, at least 0.
        warmup_epochs: epochs of linear warm-up, at least 0: epoch ``e`` (from 0) runs at
            ``lr * (e + 1) / warmup_epochs``; 0 turns it off.
        milestones: epochs at which the learning rate is multiplied by ``lr_decay``, each at
            least 0.
        lr_decay: factor applied at each milestone, in (0, 1].
        steps_per_epoch: optimizer steps in an epoch, at least 1, or null for
            ``floor(max(#RGB, #IR) / (P * K)) + 1``, as the authors' sampler.
        seed: seed of the run (weights, batches, alignment sampling), at least 0.
        strategy: the ``tf.distribute`` strategy, ``"auto"`` (multi_worker when ``TF_CONFIG``
            lists several workers, mirrored with several GPUs, else one_device),
            ``"one_device"``, ``"mirrored"`` or ``"multi_worker"``.
        precision: the Keras dtype policy, ``"float32"``, ``"mixed_float16"`` or
            ``"mixed_bfloat16"``.
        tf32: TensorFloat-32 for float32 matmuls and convolutions on Ampere and newer GPUs (no
            effect elsewhere); false keeps the float32 arithmetic the parity tests check.
        jit_compile: XLA-compile the alignment's correspondence computation.
        deterministic: TensorFlow's op determinism (``tf.config.experimental.enable_op_determinism``):
            the same seed, config and machine give bitwise the same run; false lets TensorFlow
            pick kernels that may sum in an order that varies from run to run.
        checkpoint_every: optimizer steps between checkpoints, at least 1.
        keep_checkpoints: checkpoints kept on disk, the newest ones, at least 1.
        eval_every: epochs between evaluations on the test set, at least 1; the last epoch is
            always evaluated.
    """

    epochs: int = _range(1)
    lr: float = _range(0.0, lo_open=True)
    backbone_lr_scale: float = _range(0.0)
    momentum: float = _range(0.0, 1.0)
    nesterov: bool
    weight_decay: float = _range(0.0)
    warmup_epochs: int = _range(0)
    milestones: tuple[int, ...] = _range(0)
    lr_decay: float = _range(0.0, 1.0, lo_open=True)
    steps_per_epoch: int | None = _range(1)
    seed: int = _range(0)
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"]
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"]
    tf32: bool
    jit_compile: bool
    deterministic: bool
    checkpoint_every: int = _range(1)
    keep_checkpoints: int = _range(1)
    eval_every: int = _range(1)


@dataclass(frozen=True)
class EvalConfig:
    """Feature extraction and ranking at test time.

    Attributes:
        batch_size: images per forward pass when extracting features, at least 1.
        rerank: true ranks the gallery by k-reciprocal re-ranking distances instead of the
            plain feature distances.
    """

    batch_size: int = _range(1)
    rerank: bool


@dataclass(frozen=True)
class ExportConfig:
    """Where ``make export`` writes the SavedModel for TensorFlow Serving.

    Attributes:
        base_path: the export root (mounted at ``/models`` in TensorFlow Serving); versions are
            written to ``<base_path>/<name>/<version>/``.
        name: the model name, the folder under ``base_path`` and the name clients ask for.
    """

    base_path: str
    name: str


@dataclass(frozen=True)
class Config:
    """A whole run: every section, plus its name.

    Attributes:
        name: the run's name, used in run paths; the config file's stem unless the file sets it.
        data: the dataset, batches and test protocol.
        model: the encoder, alignment and heads.
        loss: the loss margins and weights.
        train: the optimizer, schedule, distribution and checkpoints.
        eval: feature extraction and ranking at test time.
        export: where the SavedModel is written.
    """

    name: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    eval: EvalConfig
    export: ExportConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), ready for YAML or JSON."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **dotted: Any) -> Config:
        """A copy with dotted keys replaced and validated: ``cfg.replace(**{"train.lr": 0.05})``."""
        from lba_tf.config.loader import replace_config  # the loader imports this module

        return replace_config(self, dotted)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
