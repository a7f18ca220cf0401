"""ResNet backbones (18/34/50, any stem width) returning C2..C5 for the FPN.

Written for static-shape export: no data-dependent control flow. The normalisation layer is a choice
(``norm``): BatchNorm, which ImageNet weights come with (detection-style training freezes it with
:func:`freeze_batchnorm`), or GroupNorm, whose statistics do not depend on the batch and so suit training
from scratch at a batch of 2. The layer names follow torchvision's ResNet under our module tree, so that
:mod:`vknet_model.pretrained` maps a torchvision state dict one tensor to one tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """"bn"/"frozen_bn" -> BatchNorm2d; "gn" -> GroupNorm with groups of at least 4 channels (at most 32 groups)."""
    if norm in ("bn", "frozen_bn"):
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"unknown backbone norm {norm!r} (frozen_bn, gn or bn)")


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: groups of at least 4 channels, at most 32 groups."""
    return min(32, max(1, channels // 4))

# depth -> (block type, blocks per stage)
_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, in_channels: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, out_channels, 3, 1, 1, bias=False)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, in_channels: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: NormFactory) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm(out_channels))


class ResNet(nn.Module):
    """ResNet feature extractor.

    Attributes:
        out_channels: channels of C2, C3, C4, C5.
        strides: their strides (4, 8, 16, 32).
    """

    strides: tuple[int, int, int, int] = (4, 8, 16, 32)

    def __init__(self, *, depth: int, width: int = 64, norm: str = "bn") -> None:
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYOUTS)}, got {depth}")
        kind, blocks = _LAYOUTS[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        make_norm = norm_factory(norm)
        self.depth = depth
        self.width = width
        self.norm = norm
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), make_norm(width), nn.ReLU(inplace=True),
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
                layers.append(block(in_channels=in_channels, width=stage_width, stride=stride, norm=make_norm))
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
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero the last norm of each residual branch: every block starts as an identity, which makes
        # training from scratch (no ImageNet weights here) markedly more stable.
        for module in self.modules():
            last = module.bn3 if isinstance(module, Bottleneck) else module.bn2 if isinstance(module, BasicBlock) \
                else None
            if isinstance(last, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.zeros_(last.weight)

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
