"""The LbA model: two-stream encoder, GeM, BNNeck and classifier, with CMAlign in training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from lba_tf.config import RANDOM_INIT
from lba_tf.losses.dense_triplet import REDUCTIONS, dense_triplet_loss
from lba_tf.losses.identity import identity_loss
from lba_tf.losses.triplet import batch_hard_triplet_loss
from lba_tf.models.alignment import CrossModalAlignment
from lba_tf.models.encoder import TwoStreamEncoder
from lba_tf.models.heads import BNNeck, GeMPooling, IdentityClassifier

LOSS_NAMES = ("id", "triplet", "ic3", "ic4", "dt3", "dt4", "total")
"""Loss components ``compute_losses`` returns (``ic*`` and ``dt*`` only for ``method="full"``)."""


@keras.saving.register_keras_serializable(package="lba_tf")
class LbAModel(keras.Model):
    """Learning by Aligning (ICCV 2021) for visible-infrared person re-identification.

    Training (:meth:`compute_losses`) takes the concatenated batch [RGB (P*K); IR (P*K)],
    identity-major in each half: :meth:`training_outputs` runs the encoder, the heads and, in
    the full method, CMAlign on the layer3 and layer4 maps; :meth:`loss_terms`, the one place
    the losses are composed, turns those outputs into the losses. The baseline is
    ID + triplet; the full method adds the ID-consistency losses of the positive
    reconstructions and the dense triplet losses:
    ``ID + triplet + ic_w * (IC3 + IC4) + dt_w * (DT3 + DT4)``.
    Inference (:meth:`embed`, or calling the model on ``(images, modality)``) gives the pooled
    layer4 feature before the BNNeck, L2-normalised, each image through its modality's stem.

    Args:
        num_classes: training identities (classifier outputs).
        depth: ResNet depth, 18, 34 or 50.
        width: stem channels (64 in torchvision's ResNet).
        last_stride: stride of layer4 (1 in LbA).
        method: ``"baseline"`` or ``"full"``.
        num_identities: P, identities per batch (pairs of the alignment).
        num_instances: K, images per identity and modality.
        gem_p: GeM exponent.
        temperature: tau of the matching softmax.
        dt_reduction: ``"paper"`` or ``"official"`` reduction of the dense triplet loss.
        triplet_margin: margin of the batch-hard triplet loss.
        dense_triplet_margin: margin of the dense triplet loss.
        dense_triplet_weight: weight of DT3 + DT4.
        id_consistency_weight: weight of IC3 + IC4.
        jit_compile_alignment: XLA-compile the correspondence computation.
        seed: seed of the alignment's pair sampling; ``None`` picks a random one.

    The defaults are the recipe of ``configs/base.yaml``.

    Examples:

    >>> model = LbAModel(num_classes=10, depth=18, width=16, num_identities=3, num_instances=2)
    >>> emb = model.embed(tf.zeros([2, 64, 32, 3]), tf.constant([0, 1]))   # [2, 128]
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 50,
        width: int = 64,
        last_stride: int = 1,
        method: str = "full",
        num_identities: int = 8,
        num_instances: int = 4,
        gem_p: float = 3.0,
        temperature: float = 50.0,
        dt_reduction: str = "official",
        triplet_margin: float = 0.3,
        dense_triplet_margin: float = 0.3,
        dense_triplet_weight: float = 0.5,
        id_consistency_weight: float = 1.0,
        jit_compile_alignment: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in ("baseline", "full"):
            raise ValueError(f"method must be 'baseline' or 'full', got {method!r}")
        if dt_reduction not in REDUCTIONS:
            raise ValueError(f"dt_reduction must be one of {REDUCTIONS}, got {dt_reduction!r}")
        self.num_classes = int(num_classes)
        self.depth, self.width, self.last_stride = int(depth), int(width), int(last_stride)
        self.method = method
        self.num_identities, self.num_instances = int(num_identities), int(num_instances)
        self.gem_p, self.temperature, self.dt_reduction = float(gem_p), float(temperature), dt_reduction
        self.triplet_margin = float(triplet_margin)
        self.dense_triplet_margin = float(dense_triplet_margin)
        self.dense_triplet_weight = float(dense_triplet_weight)
        self.id_consistency_weight = float(id_consistency_weight)
        self.jit_compile_alignment = bool(jit_compile_alignment)
        self.seed = seed

        self.encoder = TwoStreamEncoder(depth=depth, width=width, last_stride=last_stride, name="encoder")
        # float32 under mixed precision: x**3 overflows float16 and eps=1e-12 underflows it
        self.pool = GeMPooling(p=gem_p, dtype="float32", name="gem")
        self.bnneck = BNNeck(name="bnneck")
        self.classifier = IdentityClassifier(num_classes, name="classifier")
        self.alignment = None
        if method == "full":
            self.alignment = CrossModalAlignment(
                num_identities,
                num_instances,
                temperature=temperature,
                jit_compile=jit_compile_alignment,
                seed=seed,
                name="cmalign",
            )

    def build_for(self, height: int, width: int) -> LbAModel:
        """Create every weight for ``height x width`` inputs (before ``load_weights``)."""
        images = tf.zeros([2, height, width, 3])
        pooled = self.pool(self.encoder(images, tf.constant([0, 1]), training=False)["layer4"])
        self.classifier(self.bnneck(pooled, training=False))
        self.image_size = (int(height), int(width))
        self.built = True
        return self

    def get_build_config(self):
        return {"image_size": list(self.image_size)} if getattr(self, "image_size", None) else None

    def build_from_config(self, config):
        # .keras loading: create every weight (the heads too, which inference never calls)
        self.build_for(*config["image_size"])

    def embed(self, images: tf.Tensor, modality: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Test-time embeddings.

        Args:
            images: float32 ``[B, H, W, 3]``, normalised (``lba_tf.data.preprocess.normalize``).
            modality: int32 ``[B]``, 0 visible, 1 infrared.
            training: BatchNorm mode.

        Returns:
            float32 ``[B, D]``, the GeM-pooled layer4 feature before the BNNeck, L2-normalised.
        """
        pooled = self.pool(self.encoder(images, modality, training=training)["layer4"])
        pooled = tf.cast(pooled, tf.float32)
        # torch's F.normalize: x / max(||x||, 1e-12)
        return pooled / tf.maximum(tf.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def call(self, inputs, training: bool = False):
        images, modality = inputs
        return self.embed(images, modality, training=training)

    def _head(self, feature_map: tf.Tensor, training: bool):
        pooled = self.pool(feature_map)
        return pooled, tf.cast(self.classifier(self.bnneck(pooled, training=training)), tf.float32)

    def training_outputs(
        self, images: tf.Tensor, training: bool = True, pairs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The heads' and the alignment's outputs on one training batch (no loss).

        Args:
            images: float32 ``[2PK, H, W, 3]``, [RGB half; IR half], identity-major.
            training: BatchNorm mode (the recipe trains in training mode).
            pairs: optional explicit alignment pairs ``{"layer3": (pos, neg), "layer4": (pos, neg)}``,
                int32 ``[2PK]`` indices into the batch; sampled at random when omitted.

        Returns:
            A dict with ``pooled`` ``[2PK, D]`` (GeM of layer4) and its float32 ``logits``
            ``[2PK, num_classes]``; in full mode also, each keyed by ``"layer3"`` and
            ``"layer4"``: ``alignment``, the :class:`CrossModalAlignment` outputs on that
            layer's maps; ``consistency_logits``, float32 logits of its positive reconstruction
            (layer3's passed through layer4 first).
        """
        pairs = pairs or {}
        half = tf.shape(images)[0] // 2
        feats = self.encoder.forward_pair(images[:half], images[half:], training=training)
        out: dict[str, Any] = {}
        if self.alignment is not None:
            # The order of BNNeck calls follows the reference (IC3, IC4, then ID) so that its
            # running statistics see the same sequence of batches.
            a3 = self.alignment(feats["layer3"], pairs=pairs.get("layer3"), training=training)
            recon3 = self.encoder.body.layer4(a3["reconstruction"], training=training)
            _, logits3 = self._head(recon3, training)
            a4 = self.alignment(feats["layer4"], pairs=pairs.get("layer4"), training=training)
            _, logits4 = self._head(a4["reconstruction"], training)
            out["alignment"] = {"layer3": a3, "layer4": a4}
            out["consistency_logits"] = {"layer3": logits3, "layer4": logits4}
        out["pooled"], out["logits"] = self._head(feats["layer4"], training)
        return out

    def loss_terms(self, outputs: Mapping[str, Any], labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every loss of one training batch from :meth:`training_outputs`, and their total.

        Args:
            outputs: the dict :meth:`training_outputs` returns.
            labels: int32 ``[2PK]`` training labels.

        Returns:
            The float32 scalars of :data:`LOSS_NAMES` (``ic*``/``dt*`` when ``outputs`` holds
            the alignment's).
        """
        losses: dict[str, tf.Tensor] = {}
        aligned = "alignment" in outputs
        if aligned:
            for layer, suffix in (("layer3", "3"), ("layer4", "4")):
                losses["ic" + suffix] = identity_loss(outputs["consistency_logits"][layer], labels)
                alignment = outputs["alignment"][layer]
                losses["dt" + suffix] = dense_triplet_loss(
                    alignment["query"],
                    alignment["reconstruction_pos"],
                    alignment["reconstruction_neg"],
                    alignment["comask"],
                    margin=self.dense_triplet_margin,
                    reduction=self.dt_reduction,
                )
        losses["id"] = identity_loss(outputs["logits"], labels)
        losses["triplet"] = batch_hard_triplet_loss(tf.cast(outputs["pooled"], tf.float32), labels, self.triplet_margin)
        total = losses["id"] + losses["triplet"]
        if aligned:
            total += self.id_consistency_weight * (losses["ic3"] + losses["ic4"])
            total += self.dense_triplet_weight * (losses["dt3"] + losses["dt4"])
        losses["total"] = total
        return losses

    def compute_losses(
        self, images: tf.Tensor, labels: tf.Tensor, training: bool = True, pairs: Mapping[str, Any] | None = None
    ) -> dict[str, tf.Tensor]:
        """Every loss component of one training batch, with the outputs the trainer logs.

        Args:
            images: float32 ``[2PK, H, W, 3]``, [RGB half; IR half], identity-major.
            labels: int32 ``[2PK]`` training labels.
            training: BatchNorm mode (the recipe trains in training mode).
            pairs: optional explicit alignment pairs, as in :meth:`training_outputs`.

        Returns:
            A dict with the scalar losses of :data:`LOSS_NAMES` (``ic*``/``dt*`` in full mode),
            ``logits`` ``[2PK, num_classes]``, ``pooled`` ``[2PK, D]``, and in full mode the
            layer4 alignment's ``matching`` and ``reconstruction`` for visualisation.
        """
        outputs = self.training_outputs(images, training=training, pairs=pairs)
        out = self.loss_terms(outputs, labels)
        out["logits"], out["pooled"] = outputs["logits"], outputs["pooled"]
        if "alignment" in outputs:
            out["matching"] = outputs["alignment"]["layer4"]["matching"]
            out["reconstruction"] = outputs["alignment"]["layer4"]["reconstruction"]
        return out

    def train_step(self, data):
        """One ``model.fit`` step: :func:`lba_tf.training.step.train_step`, the step the training
        loop runs, with the optimizer given to ``compile``.

        ``data`` is ``(images, labels)``, one whole P x K batch per replica (under a strategy,
        feed ``fit`` a dataset distributed per replica, e.g. with
        ``lba_tf.data.pipeline.distributed_dataset_fn``).
        """
        from lba_tf.training.step import train_step  # imported here: the training package builds on models

        return train_step(self, self.optimizer, data)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "depth": self.depth,
                "width": self.width,
                "last_stride": self.last_stride,
                "method": self.method,
                "num_identities": self.num_identities,
                "num_instances": self.num_instances,
                "gem_p": self.gem_p,
                "temperature": self.temperature,
                "dt_reduction": self.dt_reduction,
                "triplet_margin": self.triplet_margin,
                "dense_triplet_margin": self.dense_triplet_margin,
                "dense_triplet_weight": self.dense_triplet_weight,
                "id_consistency_weight": self.id_consistency_weight,
                "jit_compile_alignment": self.jit_compile_alignment,
                "seed": self.seed,
            }
        )
        return config


def build_model(config, num_classes: int) -> LbAModel:
    """The LbA model a :class:`lba_tf.config.Config` describes, with every weight created.

    ``model.pretrained`` (Keras weights written by ``python -m lba_tf.tools.import_torch``)
    is loaded when it names a file; unset or ``"random"``, the weights are random.
    """
    m, loss, data = config.model, config.loss, config.data
    model = LbAModel(
        num_classes,
        depth=m.depth,
        width=m.width,
        last_stride=m.last_stride,
        method=m.method,
        num_identities=data.num_identities,
        num_instances=data.num_instances,
        gem_p=m.gem_p,
        temperature=m.temperature,
        dt_reduction=m.dt_reduction,
        triplet_margin=loss.triplet_margin,
        dense_triplet_margin=loss.dense_triplet_margin,
        dense_triplet_weight=loss.dense_triplet_weight,
        id_consistency_weight=loss.id_consistency_weight,
        jit_compile_alignment=config.train.jit_compile,
        seed=config.train.seed,
        name="lba",
    )
    model.build_for(data.image_height, data.image_width)
    if m.pretrained not in (None, RANDOM_INIT):
        model.encoder.load_weights(m.pretrained)  # ImageNet initialisation from import_torch
    return model
