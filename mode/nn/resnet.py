"""The CIFAR ResNets of He et al. (2016): depth 6n + 2, three stages of n basic blocks (16, 32, 64 channels).

Blocks carry a ``downsample`` attribute like torchvision's, so :func:`mode.to_momentum` converts them the
same way: in each stage the shape-changing first block stays, the rest run as a MomentumNet.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    r""":math:`x \mapsto \mathrm{relu}(B_2(x) + s(x))` with :math:`B_2 = \mathrm{bn} \circ \mathrm{conv}
    \circ \mathrm{relu} \circ \mathrm{bn} \circ \mathrm{conv}` and :math:`s` the identity or, where the
    shape changes, a strided 1x1 convolution with batch norm."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for small images (``depth = 6n + 2``: 8, 20, 32, 44, 56, 110, ...)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 20, 56, 110, ...), got {depth!r}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, planes = [], width
        for i, out in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(planes, out, 1 if i == 0 else 2)] + [
                BasicBlock(out, out) for _ in range(n - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            planes = out
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(planes, num_classes))

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.stem(x)))))
