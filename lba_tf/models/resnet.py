"""ResNet in torchvision's layout ("v1.5"), channels-last, with torch-exact padding.

Layer and attribute names follow torchvision (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, the
projection shortcut as ``downsample``) so that PyTorch weights map one to one
(``lba_tf.tools.import_torch``). Every spatial convolution and the max-pool pad explicitly and
then run "valid": TensorFlow's "same" pads asymmetrically for strided layers on even sizes, torch
pads symmetrically.
"""

from __future__ import annotations

import keras
from keras import ops

from lba_tf.models.batchnorm import TorchBatchNormalization
from lba_tf.models.conv import Conv2D

BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9  # torch momentum 0.1: moving = 0.9 * moving + 0.1 * batch

_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def _channels_shape(channels: int) -> tuple:
    return (None, None, None, channels)


def _pad(x, size: int):
    """Zero-pad height and width of ``[N, H, W, C]`` by ``size`` on both sides, as torch does."""
    return ops.pad(x, [[0, 0], [size, size], [size, size], [0, 0]])


def _conv(filters: int, kernel_size: int, stride: int = 1, name: str | None = None):
    """Bias-free "valid" convolution, He-normal over fan-out like torchvision."""
    return Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_out", distribution="untruncated_normal"
        ),
        name=name,
    )


def _batch_norm(name: str):
    return TorchBatchNormalization(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=name)


def depth_spec(depth: int) -> tuple[str, tuple[int, int, int, int]]:
    """Block type ("basic" or "bottleneck") and blocks per stage of a supported ResNet depth."""
    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    return _DEPTHS[depth]


def feature_channels(depth: int, width: int = 64) -> tuple[int, int]:
    """Channels of the layer3 and layer4 outputs: ``(1024, 2048)`` for ResNet-50 at width 64.

    Args:
        depth: 18, 34 or 50.
        width: stem channels (64 in torchvision).
    """
    block_type, _ = depth_spec(depth)
    expansion = BLOCK_TYPES[block_type].expansion
    return width * 4 * expansion, width * 8 * expansion


class _ResidualBlock(keras.layers.Layer):
    """Shared parts of the two residual blocks: config, shortcut and the final add + ReLU."""

    expansion = 1

    def __init__(self, filters: int, stride: int = 1, projection: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.projection = projection
        self.out_channels = filters * self.expansion
        if projection:
            self.downsample_conv = _conv(self.out_channels, 1, stride, name="downsample_conv")
            self.downsample_bn = _batch_norm("downsample_bn")

    def _build_shortcut(self, input_shape):
        if self.projection:
            self.downsample_conv.build(input_shape)
            self.downsample_bn.build(_channels_shape(self.out_channels))

    def _merge(self, residual, inputs, training):
        shortcut = inputs
        if self.projection:
            shortcut = self.downsample_bn(self.downsample_conv(inputs), training=training)
        return ops.relu(residual + shortcut)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, stride=self.stride, projection=self.projection)
        return config


@keras.saving.register_keras_serializable(package="lba_tf")
class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Args:
        filters: channels of both convolutions and of the output.
        stride: stride of the first 3x3 convolution and of the projection shortcut.
        projection: use a 1x1 convolution + BatchNorm shortcut (``downsample``) instead of the
            identity; needed when the stride is not 1 or the channel count changes.

    Input ``[N, H, W, C_in]``, output ``[N, ceil(H / stride), ceil(W / stride), filters]``.

    Examples:
    >>> block = BasicBlock(64, stride=2, projection=True)
    >>> tuple(block(keras.ops.zeros((2, 16, 8, 32))).shape)
    (2, 8, 4, 64)
    """

    expansion = 1

    def __init__(self, filters: int, stride: int = 1, projection: bool = False, **kwargs):
        super().__init__(filters, stride, projection, **kwargs)
        self.conv1 = _conv(filters, 3, stride, name="conv1")
        self.bn1 = _batch_norm("bn1")
        self.conv2 = _conv(filters, 3, name="conv2")
        self.bn2 = _batch_norm("bn2")

    def build(self, input_shape):
        inner = _channels_shape(self.filters)
        self.conv1.build(input_shape)
        self.bn1.build(inner)
        self.conv2.build(inner)
        self.bn2.build(inner)
        self._build_shortcut(input_shape)

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(_pad(inputs, 1)), training=training))
        x = self.bn2(self.conv2(_pad(x, 1)), training=training)
        return self._merge(x, inputs, training)


@keras.saving.register_keras_serializable(package="lba_tf")
class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, "v1.5"), 1x1 expand by 4, with a residual connection.

    Args:
        filters: channels of the inner convolutions; the output has ``4 * filters``.
        stride: stride of the 3x3 convolution and of the projection shortcut.
        projection: use a 1x1 convolution + BatchNorm shortcut (``downsample``) instead of the
            identity; needed when the stride is not 1 or the channel count changes.

    Input ``[N, H, W, C_in]``, output ``[N, ceil(H / stride), ceil(W / stride), 4 * filters]``.

    Examples:
    >>> block = Bottleneck(16, stride=2, projection=True)
    >>> tuple(block(keras.ops.zeros((2, 16, 8, 32))).shape)
    (2, 8, 4, 64)
    """

    expansion = 4

    def __init__(self, filters: int, stride: int = 1, projection: bool = False, **kwargs):
        super().__init__(filters, stride, projection, **kwargs)
        self.conv1 = _conv(filters, 1, name="conv1")
        self.bn1 = _batch_norm("bn1")
        self.conv2 = _conv(filters, 3, stride, name="conv2")
        self.bn2 = _batch_norm("bn2")
        self.conv3 = _conv(self.out_channels, 1, name="conv3")
        self.bn3 = _batch_norm("bn3")

    def build(self, input_shape):
        inner = _channels_shape(self.filters)
        self.conv1.build(input_shape)
        self.bn1.build(inner)
        self.conv2.build(inner)
        self.bn2.build(inner)
        self.conv3.build(inner)
        self.bn3.build(_channels_shape(self.out_channels))
        self._build_shortcut(input_shape)

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(inputs), training=training))
        x = ops.relu(self.bn2(self.conv2(_pad(x, 1)), training=training))
        x = self.bn3(self.conv3(x), training=training)
        return self._merge(x, inputs, training)


BLOCK_TYPES = {"basic": BasicBlock, "bottleneck": Bottleneck}


@keras.saving.register_keras_serializable(package="lba_tf")
class ResNetStem(keras.layers.Layer):
    """torchvision's stem: conv1 7x7/2 (pad 3), bn1, ReLU, max-pool 3x3/2 (pad 1).

    Args:
        width: output channels (64 in torchvision).

    Input ``[N, H, W, 3]``, output ``[N, H', W', width]`` with ``H' = ceil(ceil(H / 2) / 2)``.

    Examples:
    >>> stem = ResNetStem(width=16)
    >>> tuple(stem(keras.ops.zeros((1, 288, 144, 3))).shape)
    (1, 72, 36, 16)
    """

    def __init__(self, width: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv1 = _conv(width, 7, 2, name="conv1")
        self.bn1 = _batch_norm("bn1")
        self.maxpool = keras.layers.MaxPooling2D(3, 2, padding="valid", name="maxpool")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.bn1.build(_channels_shape(self.width))

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(_pad(inputs, 3)), training=training))
        # torch pads the max-pool with -inf; after the ReLU (x >= 0) zero padding gives the same.
        return self.maxpool(_pad(x, 1))

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width)
        return config


@keras.saving.register_keras_serializable(package="lba_tf")
class ResNetStage(keras.layers.Layer):
    """One of torchvision's ``layer1`` ... ``layer4``: a sequence of residual blocks.

    The first block carries the stride and, when the stride is not 1 or the channel count
    changes, a 1x1 convolution + BatchNorm projection shortcut.

    Args:
        block_type: "basic" (``BasicBlock``) or "bottleneck" (``Bottleneck``).
        filters: inner channels of each block (output has ``filters * expansion``).
        num_blocks: number of blocks.
        input_channels: channels of the stage input.
        stride: stride of the first block.

    Examples:
    >>> stage = ResNetStage("bottleneck", 16, 3, input_channels=16)
    >>> tuple(stage(keras.ops.zeros((1, 8, 4, 16))).shape)
    (1, 8, 4, 64)
    """

    def __init__(self, block_type: str, filters: int, num_blocks: int, input_channels: int, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {sorted(BLOCK_TYPES)}, got {block_type!r}")
        self.block_type = block_type
        self.filters = filters
        self.num_blocks = num_blocks
        self.input_channels = input_channels
        self.stride = stride
        block_class = BLOCK_TYPES[block_type]
        self.out_channels = filters * block_class.expansion
        projection = stride != 1 or input_channels != self.out_channels
        self.blocks = [block_class(filters, stride, projection, name="block0")]
        self.blocks += [block_class(filters, name=f"block{i}") for i in range(1, num_blocks)]

    def build(self, input_shape):
        self.blocks[0].build(input_shape)
        for block in self.blocks[1:]:
            block.build(_channels_shape(self.out_channels))

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            block_type=self.block_type,
            filters=self.filters,
            num_blocks=self.num_blocks,
            input_channels=self.input_channels,
            stride=self.stride,
        )
        return config


@keras.saving.register_keras_serializable(package="lba_tf")
class ResNetBody(keras.layers.Layer):
    """torchvision's ``layer1`` ... ``layer4`` (everything after the stem).

    Stage widths are ``width * (1, 2, 4, 8)`` times the block expansion; stages 2 and 3 halve the
    resolution, stage 4 by ``last_stride``. ``layer4`` is an attribute and may be called on its
    own, e.g. on a reconstructed layer3 map.

    Args:
        depth: 18, 34 (basic blocks) or 50 (bottleneck blocks).
        width: channels of the stem output (64 in torchvision).
        last_stride: stride of layer4; 1 keeps layer3's resolution (torchvision uses 2).

    Input ``[N, H, W, width]`` (a stem output); output a dict with ``"layer3"``
    ``[N, H / 4, W / 4, C3]`` and ``"layer4"`` ``[N, H / (4 * last_stride), ..., C4]`` where
    ``(C3, C4) = feature_channels(depth, width)``.

    Examples:
    >>> body = ResNetBody(depth=18, width=16)
    >>> out = body(keras.ops.zeros((1, 16, 8, 16)))
    >>> tuple(out["layer3"].shape), tuple(out["layer4"].shape)
    ((1, 4, 2, 64), (1, 4, 2, 128))
    """

    def __init__(self, depth: int = 50, width: int = 64, last_stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        self.width = width
        self.last_stride = last_stride
        block_type, counts = depth_spec(depth)
        strides = (1, 2, 2, last_stride)
        channels = width
        stages = []
        for index, (count, stride) in enumerate(zip(counts, strides)):
            stage = ResNetStage(block_type, width * 2**index, count, channels, stride, name=f"layer{index + 1}")
            channels = stage.out_channels
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def build(self, input_shape):
        self.layer1.build(input_shape)
        for stage in (self.layer2, self.layer3, self.layer4):
            stage.build(_channels_shape(stage.input_channels))

    def call(self, inputs, training=None):
        x = self.layer1(inputs, training=training)
        x = self.layer2(x, training=training)
        layer3 = self.layer3(x, training=training)
        return {"layer3": layer3, "layer4": self.layer4(layer3, training=training)}

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, width=self.width, last_stride=self.last_stride)
        return config
