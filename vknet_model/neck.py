"""FPN and the semantic FPN that fuses P2..P5 at stride 8, optionally refined to stride 4.

The fused map yields two features: a localisation map (thing proposals are read from it) and a
semantic map (stuff kernels are the rows of ``conv_seg`` applied to it). Downstream kernels see
``x = loc + sem``.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


class ConvGN(nn.Sequential):
    """Conv (no bias) + GroupNorm, then ReLU unless ``relu=False`` (FPN convs stay linear)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, groups: int, stride: int = 1,
                 relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                                   nn.GroupNorm(groups, out_channels)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class FPN(nn.Module):
    """Top-down feature pyramid: C2..C5 -> P2..P5, all with ``channels`` channels, each at its input's stride.

    Attributes:
        strides: strides of P2..P5 (the backbone's), each twice the one before.
    """

    def __init__(self, *, in_channels: tuple[int, ...], strides: tuple[int, ...], channels: int,
                 groups: int) -> None:
        super().__init__()
        if len(strides) != len(in_channels) or any(b != 2 * a for a, b in pairwise(strides)):
            raise ValueError(f"FPN needs one stride per input level, each twice the one before; got {strides} for "
                             f"{len(in_channels)} levels")
        self.strides = strides
        self.lateral = nn.ModuleList(ConvGN(c, channels, 1, groups=groups, relu=False) for c in in_channels)
        self.output = nn.ModuleList(ConvGN(channels, channels, 3, groups=groups, relu=False) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            # Static x2 (input sizes are multiples of 32), which exports as a fixed Resize.
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=2.0, mode="nearest")
        return [conv(lat) for conv, lat in zip(self.output, laterals, strict=True)]


def sine_position_encoding(height: int, width: int, channels: int, *, device: torch.device | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed 2-D sine encoding (DETR style, normalised to 2*pi): [1, channels, H, W], half per axis.

    Depends only on the (static) feature size, so export folds it into a constant.
    """
    feats = channels // 2
    y = (torch.arange(1, height + 1, device=device, dtype=dtype) / height * 2 * math.pi)[:, None]
    x = (torch.arange(1, width + 1, device=device, dtype=dtype) / width * 2 * math.pi)[:, None]
    dim_t = 10000 ** (2 * torch.div(torch.arange(feats, device=device), 2, rounding_mode="floor").to(dtype) / feats)
    pos_y = y / dim_t  # [H, feats]
    pos_x = x / dim_t  # [W, feats]
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    # [H, feats] and [W, feats] -> [1, 2*feats, H, W]
    pos = torch.cat((pos_y[:, None, :].expand(height, width, feats), pos_x[None, :, :].expand(height, width, feats)),
                    dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0)


class SemanticFPN(nn.Module):
    """Fuse P2..P5 at P3's stride (8) and split into localisation and semantic features.

    P2: 3x3 stride-2 conv; P3: conv; P4: conv, x2, conv; P5 + position encoding: conv, x2, conv, x2, conv.
    With ``out_stride`` at P2's stride (4) the fused map is upsampled x2 and refined with a 1x1 conv of P2
    before the two heads, so that masks can follow objects a stride-8 cell is too coarse for (distant people,
    poles).

    Attributes:
        out_stride: stride of both outputs, the masks' stride (``VKNet.mask_stride``).
    """

    def __init__(self, *, channels: int, groups: int, in_strides: tuple[int, ...], out_stride: int) -> None:
        super().__init__()
        if len(in_strides) != 4:
            raise ValueError(f"SemanticFPN fuses four levels P2..P5, got strides {in_strides}")
        if out_stride not in in_strides[:2]:
            raise ValueError(f"out_stride must be P2's or P3's stride {in_strides[:2]}, got {out_stride}")
        self.channels = channels
        self.out_stride = out_stride
        self.p2_fine = ConvGN(channels, channels, 1, groups=groups, relu=False) if out_stride == in_strides[0] \
            else None
        self.p2 = ConvGN(channels, channels, 3, groups=groups, stride=2)
        self.p3 = ConvGN(channels, channels, 3, groups=groups)
        self.p4 = nn.ModuleList([ConvGN(channels, channels, 3, groups=groups),
                                 ConvGN(channels, channels, 3, groups=groups)])
        self.p5 = nn.ModuleList([ConvGN(channels, channels, 3, groups=groups) for _ in range(3)])
        self.loc_head = ConvGN(channels, channels, 1, groups=groups)
        self.sem_head = ConvGN(channels, channels, 1, groups=groups)

    @staticmethod
    def _up_convs(x: torch.Tensor, convs: nn.ModuleList) -> torch.Tensor:
        x = convs[0](x)
        for conv in convs[1:]:
            x = conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return x

    def forward(self, pyramid: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[P2, P3, P4, P5] -> (loc, sem), each [B, C, H/s, W/s] at the output stride s."""
        p2, p3, p4, p5 = pyramid
        pos = sine_position_encoding(p5.shape[-2], p5.shape[-1], self.channels, device=p5.device, dtype=p5.dtype)
        fused = self.p2(p2) + self.p3(p3) + self._up_convs(p4, self.p4) + self._up_convs(p5 + pos, self.p5)
        if self.p2_fine is not None:
            fused = F.interpolate(fused, scale_factor=2.0, mode="bilinear", align_corners=False) + self.p2_fine(p2)
        return self.loc_head(fused), self.sem_head(fused)
