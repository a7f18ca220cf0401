"""ResNet backbones (18/34/50, any stem width) returning C2..C5 for the FPN.

Written for static-shape export: no data-dependent control flow. BatchNorm runs in whatever mode the
module is in; detection-style training may freeze it with :func:`freeze_batchnorm`.
"""

from __future__ import annotations

import torch
from torch import nn

# depth -> (block type, blocks per stage)
_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class ResNet(nn.Module):
    """ResNet feature extractor.

    Attributes:
        out_channels: channels of C2, C3, C4, C5.
        strides: their strides (4, 8, 16, 32).
    """

    strides: tuple[int, int, int, int] = (4, 8, 16, 32)

    def __init__(self, *, depth: int, width: int = 64) -> None:
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYOUTS)}, got {depth}")
        kind, blocks = _LAYOUTS[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        in_channels = width
        channels: list[int] = []
        for index, count in enumerate(blocks):
            stage_width = width * 2**index
            layers = []
            for b in range(count):
                stride = 2 if b == 0 and index > 0 else 1
                layers.append(block(in_channels=in_channels, width=stage_width, stride=stride))
                in_channels = stage_width * block.expansion
            stages.append(nn.Sequential(*layers))
            channels.append(in_channels)
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero the last norm of each residual branch: every block starts as an identity, which makes
        # training from scratch (no ImageNet weights here) markedly more stable.
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] normalised image -> [C2, C3, C4, C5], each [B, out_channels[i], H/s, W/s]."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode with frozen affine parameters (small-batch detection training)."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.eval()
            for parameter in child.parameters():
                parameter.requires_grad_(False)
