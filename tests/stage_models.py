"""Small user-defined models for tests/test_stages.py, built through `module:function` factories."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SmallNet(nn.Module):
    """A user's own CNN: functional ops in forward (relu, flatten) that a naive children split would miss."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.pool(self.body(x))
        return self.fc(torch.flatten(x, 1))


def small_net(num_classes: int, in_channels: int) -> nn.Module:
    return SmallNet(num_classes, in_channels)


class SkipNet(nn.Module):
    """A skip connection from after `a` to after `c`: a cut after `b` is not a bottleneck."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.a = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        y = self.c(torch.relu(self.b(h)))
        return self.head(y + h)


def skip_net(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return SkipNet(num_classes, in_channels)


NOT_A_FACTORY = 3


class TiedNet(nn.Module):
    """Module `a` runs before and after `b`: its weights would be on both sides of a cut after `b`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(self.b(self.a(self.stem(x)))))
