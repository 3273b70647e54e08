"""The LbA model's module tree in PyTorch (two stems, shared body, BNNeck, classifier).

Its ``state_dict()`` has the key layout of an LbA training checkpoint: each stem module holds a
whole ResNet (with fc) of which only conv1/bn1 run; the body ResNet has no fc.
"""

import torch
from torch import nn

from tests.torch_reference.resnet import ResNet, gem


class LbAReference(nn.Module):
    def __init__(self, num_classes, depth=50, width=64):
        super().__init__()
        self.visible_module = nn.Module()
        self.visible_module.visible = ResNet(depth, width, last_stride=1)
        self.thermal_module = nn.Module()
        self.thermal_module.thermal = ResNet(depth, width, last_stride=1)
        self.base_resnet = nn.Module()
        self.base_resnet.base = ResNet(depth, width, last_stride=1, num_classes=None)
        channels = self.base_resnet.base.out_channels
        self.bottleneck = nn.BatchNorm1d(channels)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(channels, num_classes, bias=False)

    def forward(self, images, infrared: bool):
        """Layer3/layer4 maps, pooled feature, BNNeck output and logits for one modality."""
        stem = self.thermal_module.thermal if infrared else self.visible_module.visible
        features = self.base_resnet.base.body(stem.stem(images))
        pooled = gem(features["layer4"])
        neck = self.bottleneck(pooled)
        return {**features, "pooled": pooled, "neck": neck, "logits": self.classifier(neck)}
