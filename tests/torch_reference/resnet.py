"""A torchvision-layout ResNet written with torch.nn primitives, for parity tests only.

Same module names as torchvision (conv1, bn1, layer1..layer4 with blocks 0.., downsample.0/1,
fc), so its ``state_dict()`` has torchvision's keys. ``width`` scales every stage (64 in
torchvision) and ``last_stride`` sets layer4's stride.

Every ReLU and max-pool goes through :func:`relu` and :func:`max_pool`, so that a parity test
can make the reference decide as another implementation did (:func:`following`): at a ReLU
input within rounding of 0 or a max-pool window whose two largest values are within rounding
of each other, a float32 run may take either side, and the gradient differs by that element's
whole contribution.
"""

import contextlib

import numpy as np
import torch
from torch import nn

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


class FollowedRun:
    """Another run's ReLU inputs, whose decisions the reference's ReLUs and max-pools take.

    ``relu(x)`` returns ``x * (recorded > 0)``: ``relu(x)`` wherever ``x`` is on the side of
    the kink that the other run's input was, else ``x`` or ``0``, which differ from ``relu(x)``
    by at most ``|x|``; its gradient is the other run's ReLU derivative. ``max_pool(module, x)``
    takes each window's value at the position where the other run's window maximum was (its
    input is the last recorded ReLU's output: the stem's ReLU feeds its max-pool).

    Attributes:
        relu_calls: the recorded arrays used so far.
        relu_disagreements: inputs whose sign differs from the recorded one.
        largest_relu_disagreement: over those, the largest ``|x| / max |x|`` of the call.
        pool_disagreements: windows whose own maximum is elsewhere.
        largest_pool_disagreement: over those, the largest ``(own maximum - value taken) /
            max x``.
    """

    def __init__(self, relu_inputs):
        self._inputs = [np.ascontiguousarray(value) for value in relu_inputs]
        self.relu_calls = 0
        self.relu_disagreements = self.pool_disagreements = 0
        self.largest_relu_disagreement = self.largest_pool_disagreement = 0.0

    @property
    def exhausted(self) -> bool:
        return self.relu_calls == len(self._inputs)

    def relu(self, x):
        if self.exhausted:
            raise AssertionError(f"the reference calls ReLU more than the {self.relu_calls} "
                                 "recorded times")
        recorded = torch.from_numpy(self._inputs[self.relu_calls])
        self.relu_calls += 1
        if tuple(recorded.shape) != tuple(x.shape):
            raise AssertionError(f"ReLU call {self.relu_calls}: recorded {tuple(recorded.shape)}, "
                                 f"reference {tuple(x.shape)}")
        positive = recorded > 0
        differ = positive != (x > 0)
        if bool(differ.any()):
            self.relu_disagreements += int(differ.sum())
            values = x.detach().abs()
            self.largest_relu_disagreement = max(self.largest_relu_disagreement,
                                                 float(values[differ].max() / values.max()))
        return x * positive.to(x.dtype)

    def max_pool(self, module, x):
        recorded = torch.relu(torch.from_numpy(self._inputs[self.relu_calls - 1])).to(x.dtype)
        _, followed = nn.functional.max_pool2d(recorded, module.kernel_size, module.stride,
                                               module.padding, return_indices=True)
        own, indices = nn.functional.max_pool2d(x.detach(), module.kernel_size, module.stride,
                                                module.padding, return_indices=True)
        taken = x.flatten(2).gather(2, followed.flatten(2)).view_as(own)
        differ = followed != indices
        if bool(differ.any()):
            self.pool_disagreements += int(differ.sum())
            gaps = (own - taken.detach())[differ] / x.detach().max()
            self.largest_pool_disagreement = max(self.largest_pool_disagreement,
                                                 float(gaps.max()))
        return taken


_followed = None


def relu(x):
    """``torch.relu``, or inside :func:`following` the recorded run's decisions."""
    return torch.relu(x) if _followed is None else _followed.relu(x)


def max_pool(module, x):
    """``module(x)`` (an ``nn.MaxPool2d``), or inside :func:`following` the recorded run's."""
    return module(x) if _followed is None else _followed.max_pool(module, x)


@contextlib.contextmanager
def following(relu_inputs):
    """Within this block the reference's ReLUs and max-pools decide as another run did.

    Args:
        relu_inputs: that run's ReLU inputs, ``[N, C, H, W]`` arrays in call order.

    Yields the :class:`FollowedRun`, to check afterwards that every array was used and how
    close to a tie the reference's own values were wherever the decisions differed.
    """
    global _followed
    if _followed is not None:
        raise RuntimeError("following does not nest")
    _followed = FollowedRun(relu_inputs)
    try:
        yield _followed
    finally:
        _followed = None


def _conv(in_channels, out_channels, kernel_size, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv(in_channels, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv(in_channels, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet-18/34/50; ``num_classes=None`` leaves out the ``fc`` layer."""

    def __init__(self, depth=50, width=64, last_stride=2, num_classes=10):
        super().__init__()
        block_type, counts = DEPTHS[depth]
        block = BasicBlock if block_type == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for index, (count, stride) in enumerate(zip(counts, (1, 2, 2, last_stride))):
            planes = width * 2**index
            downsample = None
            if stride != 1 or channels != planes * block.expansion:
                downsample = nn.Sequential(_conv(channels, planes * block.expansion, 1, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(channels, planes, stride, downsample)]
            channels = planes * block.expansion
            blocks += [block(channels, planes) for _ in range(1, count)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.out_channels = channels
        if num_classes is not None:
            self.fc = nn.Linear(channels, num_classes)

    def stem(self, x):
        return max_pool(self.maxpool, relu(self.bn1(self.conv1(x))))

    def body(self, x):
        layer3 = self.layer3(self.layer2(self.layer1(x)))
        return {"layer3": layer3, "layer4": self.layer4(layer3)}

    def forward(self, x):
        return self.body(self.stem(x))


def gem(x, p=3.0, eps=1e-12):
    """GeM pooling of ``[N, C, H, W]`` to ``[N, C]``."""
    return (x.pow(p).mean(dim=(2, 3)) + eps).pow(1.0 / p)


@torch.no_grad()
def shrink_residual_branches_(module, factor=0.2):
    """Scale the last BatchNorm weight of every residual branch by ``factor``.

    With the scales near 1 that :func:`randomize_` draws, the residual stream of a random
    ResNet grows block by block and training-mode BatchNorm amplifies float32 rounding with it
    (torch float32 and float64 layer4 outputs of a ResNet-50 then differ by ~3e-5 relative);
    small last scales, as trained ResNets have, keep the network well conditioned.
    """
    for block in module.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            last.weight.mul_(factor)
    return module


@torch.no_grad()
def randomize_(module, seed=0):
    """Random weights everywhere, including BatchNorm affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor, mean, std):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            normal(layer.weight, 0.0, (2.0 / fan_in) ** 0.5)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            uniform(layer.weight, 0.5, 1.5)
            normal(layer.bias, 0.0, 0.2)
            normal(layer.running_mean, 0.0, 0.2)
            uniform(layer.running_var, 0.5, 2.0)
        elif isinstance(layer, nn.Linear):
            normal(layer.weight, 0.0, 0.05)
            if layer.bias is not None:
                normal(layer.bias, 0.0, 0.05)
    return module
