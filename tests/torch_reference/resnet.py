"""A torchvision-layout ResNet written with torch.nn primitives, for parity tests only.

Same module names as torchvision (conv1, bn1, layer1..layer4 with blocks 0.., downsample.0/1,
fc), so its ``state_dict()`` has torchvision's keys. ``width`` scales every stage (64 in
torchvision) and ``last_stride`` sets layer4's stride.
"""

import torch
from torch import nn

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


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
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


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
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


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
        return self.maxpool(torch.relu(self.bn1(self.conv1(x))))

    def body(self, x):
        layer3 = self.layer3(self.layer2(self.layer1(x)))
        return {"layer3": layer3, "layer4": self.layer4(layer3)}

    def forward(self, x):
        return self.body(self.stem(x))


def gem(x, p=3.0, eps=1e-12):
    """GeM pooling of ``[N, C, H, W]`` to ``[N, C]``."""
    return (x.pow(p).mean(dim=(2, 3)) + eps).pow(1.0 / p)


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
