"""CMAlign: dense cross-modal correspondences and reconstructions of RGB and IR feature maps.

Every image of a batch ``[RGB (PK); IR (PK)]`` is matched densely to a positive image (same
identity, other modality) and a negative image (other identity, other modality); the warped
targets give reconstructions ``R+`` and ``R-`` of the query's feature map. The dense triplet
loss (``lba_tf.losses.dense_triplet``) and, for ``R+``, the ID-consistency heads are computed
from them where the model composes its losses. Training only.
"""

from __future__ import annotations

import random

import keras
import tensorflow as tf

from lba_tf.config.batch_layout import alignment_can_pair

MINMAX_EPS = 1e-12
NORMALIZE_EPS = 1e-12


def _random_permutations(shape: list[int], seed: tf.Tensor) -> tf.Tensor:
    """Independent uniform random permutations of ``0..shape[-1]-1``, int32 ``shape``."""
    keys = tf.random.stateless_uniform(shape, seed=seed)
    return tf.argsort(keys, axis=-1, stable=True)


def check_batch_layout(num_identities: int, num_instances: int) -> None:
    """Raise ``ValueError`` unless every identity can get K distinct other identities."""
    if not alignment_can_pair(num_identities, num_instances):
        raise ValueError(
            f"negatives need num_identities - 1 >= num_instances, got P={num_identities}, K={num_instances}"
        )


def sample_alignment_pairs(num_identities: int, num_instances: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Draw a positive and a negative target for every image of an identity-major batch.

    The batch is ``[RGB (PK); IR (PK)]`` with ``N = 2PK`` images, image ``i`` of each half
    belonging to identity ``i // K``. RGB queries target IR images and IR queries target RGB
    images. Positives: per identity, a random permutation of that identity's K images in the
    other modality. Negatives: per identity, K distinct other identities drawn without
    replacement, each paired with a position given by a random permutation of ``0..K-1``.

    Args:
        num_identities: P, identities per batch.
        num_instances: K, images per identity and modality.
        seed: ``[2]`` int32/int64 stateless seed; the same seed gives the same pairs.

    Returns:
        ``(pos, neg)``, int32 ``[N]`` indices into the concatenated batch: query ``i`` is
        aligned to images ``pos[i]`` and ``neg[i]``.

    Raises:
        ValueError: when ``P - 1 < K`` (not enough other identities for distinct negatives).
    """
    p, k = num_identities, num_instances
    check_batch_layout(p, k)
    seed_pos, seed_neg_identity, seed_neg_position = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    # Axis 0 runs over the query halves: 0 = RGB queries, 1 = IR queries.
    first_image = tf.range(p, dtype=tf.int32)[:, None] * k
    pos = first_image + _random_permutations([2, p, k], seed_pos)
    # Pushing each identity's own key above every uniform key sorts it last, so the first K
    # of the argsort are K distinct other identities in a uniformly random order.
    keys = tf.random.stateless_uniform([2, p, p], seed=seed_neg_identity) + tf.eye(p)
    neg_identity = tf.argsort(keys, axis=-1, stable=True)[..., :k]
    neg = neg_identity * k + _random_permutations([2, p, k], seed_neg_position)
    other_half = tf.constant([p * k, 0], dtype=tf.int32)[:, None, None]
    return tf.reshape(pos + other_half, [-1]), tf.reshape(neg + other_half, [-1])


def minmax_normalize(values: tf.Tensor) -> tf.Tensor:
    """Per image ``(v - min) / (max - min + 1e-12)`` over all positions.

    Args:
        values: ``[N, H, W]``.

    Returns:
        ``[N, H, W]`` in [0, 1].
    """
    shifted = values - tf.reduce_min(values, axis=[1, 2], keepdims=True)
    return shifted / (tf.reduce_max(shifted, axis=[1, 2], keepdims=True) + MINMAX_EPS)


def foreground_mask(features: tf.Tensor) -> tf.Tensor:
    """Foreground mask ``m``: the channel L2 norm at each position, min-max normalised per image.

    No gradient flows through the mask.

    Args:
        features: ``[N, H, W, C]``.

    Returns:
        ``[N, H, W]`` in [0, 1], in the dtype of ``features``.
    """
    features = tf.stop_gradient(features)
    return minmax_normalize(tf.sqrt(tf.reduce_sum(tf.square(features), axis=-1)))


def l2_normalize_channels(features: tf.Tensor) -> tf.Tensor:
    """``x / max(||x||_2, 1e-12)`` over the last axis (torch's ``F.normalize``).

    Written with ``rsqrt(max(||x||^2, eps^2))`` so that an all-zero vector (common after a
    ReLU) has a finite gradient.
    """
    squared_norm = tf.reduce_sum(tf.square(features), axis=-1, keepdims=True)
    return features * tf.math.rsqrt(tf.maximum(squared_norm, NORMALIZE_EPS**2))


def soft_correspondence(query: tf.Tensor, target: tf.Tensor, temperature: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Matching probability of query positions over target positions, and the warped target.

    ``S[p, p']`` is the cosine similarity of the channel vectors of the query at ``p`` and the
    target at ``p'``; ``P[p, :] = softmax(temperature * S[p, :])`` with the row maximum
    subtracted; the warp is ``W(p) = sum_p' P[p, p'] * target(p')`` on the raw target features.

    Args:
        query: ``[N, H, W, C]`` float32 query feature maps.
        target: ``[N, H, W, C]`` float32 target feature maps (one target per query).
        temperature: the softmax temperature ``tau``.

    Returns:
        ``(matching, warped)``: ``[N, H*W, H*W]`` rows summing to 1, and ``[N, H, W, C]``.
    """
    shape = tf.shape(query)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    query_flat = tf.reshape(query, [n, h * w, c])
    target_flat = tf.reshape(target, [n, h * w, c])
    similarity = tf.einsum("npc,nqc->npq", l2_normalize_channels(query_flat), l2_normalize_channels(target_flat))
    logits = temperature * (similarity - tf.reduce_max(similarity, axis=-1, keepdims=True))
    matching = tf.nn.softmax(logits, axis=-1)
    warped = tf.einsum("npq,nqc->npc", matching, target_flat)
    return matching, tf.reshape(warped, shape)


_soft_correspondence_xla = tf.function(soft_correspondence, jit_compile=True)


def reconstruct(mask: tf.Tensor, warped: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
    """``R = m * W + (1 - m) * F_q``: foreground from the warped target, background kept.

    Args:
        mask: ``[N, H, W]`` foreground mask of the query.
        warped: ``[N, H, W, C]`` warped target.
        query: ``[N, H, W, C]`` query features.
    """
    mask = mask[..., None]
    return mask * warped + (1.0 - mask) * query


def co_attention(matching: tf.Tensor, mask_query: tf.Tensor, mask_target: tf.Tensor) -> tf.Tensor:
    """Co-attention ``c(p) = m_q(p) * sum_p' P[p, p'] m_k(p')``, min-max normalised, no gradient.

    Args:
        matching: ``[N, H*W, H*W]`` positive matching probability.
        mask_query: ``[N, H, W]`` foreground mask of the queries.
        mask_target: ``[N, H, W]`` foreground mask of their positive targets.

    Returns:
        ``[N, H, W]`` in [0, 1].
    """
    shape = tf.shape(mask_query)
    target_flat = tf.reshape(tf.stop_gradient(mask_target), [shape[0], -1])
    transported = tf.einsum("npq,nq->np", tf.stop_gradient(matching), target_flat)
    comask = tf.stop_gradient(mask_query) * tf.reshape(transported, shape)
    return minmax_normalize(comask)


@keras.saving.register_keras_serializable(package="lba_tf")
class CrossModalAlignment(keras.layers.Layer):
    """CMAlign: dense RGB<->IR correspondences and the reconstructions ``R+`` and ``R-``.

    Takes the feature maps of a whole batch ``[RGB (PK); IR (PK)]``, draws fresh random pairs on
    every call (unless ``pairs`` is given) and returns what the dense triplet loss, the
    ID-consistency heads and the correspondence pictures need; it computes no loss. The
    correspondence computation (normalise, similarity, softmax, warp) runs in float32 and, by
    default, XLA-compiled. The layer behaves the same in training and inference; the model
    calls it only when training.

    Args:
        num_identities: P, identities per batch.
        num_instances: K, images per identity and modality (needs ``P - 1 >= K``).
        temperature: softmax temperature ``tau`` of the matching probability.
        jit_compile: XLA-compile the correspondence computation.
        seed: integer seed of the pair sampler; ``None`` picks a random one. The sampler's
            state ``[seed, calls so far]`` is a non-trainable int64 weight, so Keras weight
            files and ``tf.train.Checkpoint`` restore it (``keras.random.SeedGenerator``'s
            state is saved by neither).
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Call arguments:
        features: ``[N, H, W, C]`` feature maps ``F_q``, ``N = 2PK`` when pairs are sampled.
        pairs: optional ``(pos, neg)`` int32 ``[N]`` target indices.
        training: unused; accepted for the Keras call convention.

    Returns:
        A dict:
        ``"reconstruction"``: ``R+`` ``[N, H, W, C]`` in the input dtype, for the network
        (the ID-consistency heads);
        ``"query"``: ``F_q`` ``[N, H, W, C]`` in float32, the anchor of the dense triplet loss;
        ``"reconstruction_pos"``, ``"reconstruction_neg"``: ``R+`` and ``R-`` ``[N, H, W, C]``
        in float32, its positive and negative;
        ``"matching"``: positive matching probability ``[N, H*W, H*W]``, float32;
        ``"comask"``: co-attention ``[N, H, W]``, float32, no gradient;
        ``"pairs"``: ``(pos, neg)`` int32 ``[N]``, the targets used.

    Examples:

    >>> align = CrossModalAlignment(num_identities=8, num_instances=4, seed=0)
    >>> out = align(tf.random.uniform([64, 18, 9, 32]))
    >>> out["reconstruction"].shape, out["matching"].shape
    (TensorShape([64, 18, 9, 32]), TensorShape([64, 162, 162]))
    >>> from lba_tf.losses.dense_triplet import dense_triplet_loss
    >>> loss = dense_triplet_loss(out["query"], out["reconstruction_pos"],
    ...                           out["reconstruction_neg"], out["comask"])
    """

    def __init__(
        self,
        num_identities: int,
        num_instances: int,
        temperature: float = 50.0,
        jit_compile: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_batch_layout(num_identities, num_instances)
        self.num_identities = num_identities
        self.num_instances = num_instances
        self.temperature = temperature
        self.jit_compile = jit_compile
        self.seed = seed
        initial_seed = seed if seed is not None else random.randint(1, 10**9)
        self.seed_state = self.add_weight(
            name="seed_state",
            shape=(2,),
            dtype="int64",
            initializer=keras.initializers.Constant([initial_seed, 0]),
            trainable=False,
            aggregation="only_first_replica",
        )
        self._correspondence = _soft_correspondence_xla if jit_compile else soft_correspondence
        self.built = True  # its one weight, made above, does not depend on the input's shape

    def next_seed(self) -> tf.Tensor:
        """The stateless seed ``[2]`` of this call; advances the state by one."""
        seed = tf.convert_to_tensor(self.seed_state.value)
        self.seed_state.assign_add(tf.constant([0, 1], dtype=tf.int64))
        return seed

    def call(self, features, pairs=None, training=None):
        if pairs is None:
            pairs = sample_alignment_pairs(self.num_identities, self.num_instances, self.next_seed())
        pos, neg = (tf.cast(index, tf.int32) for index in pairs)
        query = tf.cast(features, tf.float32)
        mask = foreground_mask(query)

        matching_pos, warped_pos = self._correspondence(query, tf.gather(query, pos), self.temperature)
        _, warped_neg = self._correspondence(query, tf.gather(query, neg), self.temperature)
        reconstruction_pos = reconstruct(mask, warped_pos, query)
        return {
            "reconstruction": tf.cast(reconstruction_pos, features.dtype),
            "query": query,
            "reconstruction_pos": reconstruction_pos,
            "reconstruction_neg": reconstruct(mask, warped_neg, query),
            "matching": matching_pos,
            "comask": co_attention(matching_pos, mask, tf.gather(mask, pos)),
            "pairs": (pos, neg),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_identities": self.num_identities,
                "num_instances": self.num_instances,
                "temperature": self.temperature,
                "jit_compile": self.jit_compile,
                "seed": self.seed,
            }
        )
        return config
