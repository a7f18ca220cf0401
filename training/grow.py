"""Start a larger network from a trained smaller one: more kernel update stages, a backbone twice as wide, more
thing proposals, or several of these.

A run from scratch costs days on a CPU; a larger network initialised from trained weights starts where the
smaller one stopped and only has to learn what the added capacity buys.

**Deeper** (``n`` -> ``m`` stages, ``m > n``). K-Net's stages all have the same shape, so a stage's weights
fit any other; only the last stage carries Video K-Net's kernel fusion. New stage ``i < n - 1`` is old stage
``i``; the new middle stages ``n - 1 .. m - 2`` are copies of the old last stage without its fusion blocks;
the new last stage is the old last stage, fusion included. Each new middle stage repeats the old network's
final refinement, which the losses on every stage then specialise.

**Wider backbone** (``backbone_width`` w -> 2w, Net2Net's widening). Every backbone channel becomes two
copies, ordered so that each GroupNorm group of the wide network holds exactly the channels (twice) of one
group of the narrow one: group statistics, and so the function, are unchanged. A layer reading widened
channels sees each input twice, so its weights on them are halved; the FPN's lateral convolutions are the
only layers outside the backbone that read them. Identical copies would also receive identical gradients
forever, so the copies' weights get noise of ``noise`` x each tensor's standard deviation: the wide network
starts within that noise of the narrow one's outputs and can then use its extra channels.

**More proposals** (``N`` -> ``M`` thing kernels). New proposal ``j >= N`` is a twin of old proposal ``j mod
N`` with ``PROPOSAL_NOISE`` x the weights' standard deviation added. A learned proposal covers a region and a
kind of object; where two small things stand side by side in its region it can only merge them or miss one.
Its twin starts on the same region, so Hungarian matching can give each neighbour its own kernel at once,
instead of waiting for a random new kernel to find the region. The twins' near-equal masks fight in the
assembly until training has told them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vknet_model.backbone import group_count
from vknet_model.network import VKNet

_STAGES = "stages."
_READS_BACKBONE = ("backbone.", "fpn.lateral.")  # tensors whose channels follow the backbone's width
WIDEN_NOISE = 0.01
_PROPOSALS = "initial.proposals.weight"
PROPOSAL_NOISE = 0.1  # larger than WIDEN_NOISE: twins must part, while widened copies only add capacity


@dataclass(frozen=True)
class GrowthReport:
    """What :func:`grow_into` did, for the training log."""

    old_stages: int
    new_stages: int
    copied: tuple[int, ...]  # new stage indices initialised from the old last stage's update (no fusion)
    old_width: int
    new_width: int
    noise: float  # on the widened copies, x each tensor's standard deviation
    old_proposals: int
    new_proposals: int

    def summary(self) -> str:
        parts = []
        if self.new_stages != self.old_stages:
            parts.append(f"grew {self.old_stages} -> {self.new_stages} update stages: stages "
                         f"{', '.join(map(str, self.copied))} start as copies of the old last stage")
        if self.new_width != self.old_width:
            parts.append(f"widened the backbone {self.old_width} -> {self.new_width} channels: each old channel "
                         f"twice, outputs kept up to {self.noise:g} x noise")
        if self.new_proposals != self.old_proposals:
            parts.append(f"{self.old_proposals} -> {self.new_proposals} thing proposals: each new one a twin of "
                         f"an old one with {PROPOSAL_NOISE:g} x noise")
        return "; ".join(parts)


def grow_into(net: VKNet, old: VKNet, *, noise: float = WIDEN_NOISE, seed: int = 0) -> GrowthReport:
    """Load ``old``'s weights into ``net``, which has more update stages, a backbone twice as wide and/or more
    thing proposals, and is otherwise the same network.

    Raises:
        ValueError: ``net`` is not larger than ``old`` in these ways only.
    """
    n, m = len(old.stages), len(net.stages)
    w, wide = old.backbone.width, net.backbone.width
    p, q = old.num_proposals, net.num_proposals
    if m < n or q < p or (m, wide, q) == (n, w, p):
        raise ValueError(f"growing needs more update stages than the checkpoint's {n}, a backbone twice as "
                         f"wide as its {w} channels or more thing proposals than its {p}")
    if wide not in (w, 2 * w):
        raise ValueError(f"a backbone can only be widened to twice its width ({w} -> {2 * w}), not to {wide}")
    mapped = _deeper(old.state_dict(), n, m)
    target = net.state_dict()
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    if missing or unexpected:
        raise ValueError("the networks differ beyond their number of stages, backbone width and proposals: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    generator = torch.Generator().manual_seed(seed)
    for key, value in list(mapped.items()):
        if value.shape == target[key].shape:
            continue
        if key == _PROPOSALS and q > p:
            mapped[key] = _twinned(value, q, generator)
            continue
        if wide == w or not key.startswith(_READS_BACKBONE):
            raise ValueError(f"the networks differ beyond their number of stages, backbone width and proposals: {key} "
                             f"{tuple(value.shape)} -> {tuple(target[key].shape)}")
        mapped[key] = _widened(key, value, target[key].shape, noise, generator)
    net.load_state_dict(mapped)
    return GrowthReport(old_stages=n, new_stages=m, copied=tuple(range(n - 1, m - 1)), old_width=w, new_width=wide,
                        noise=noise, old_proposals=p, new_proposals=q)


def _twinned(weight: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Proposal weights [N, C, 1, 1] -> [count, C, 1, 1]: the old rows, then twins of them with noise."""
    sources = torch.arange(count) % weight.shape[0]
    out = weight.index_select(0, sources)
    jitter = torch.randn(out.shape, generator=generator) * PROPOSAL_NOISE * float(weight.std())
    twin = (torch.arange(count) >= weight.shape[0])[:, None, None, None]
    return (out + torch.where(twin, jitter, torch.zeros_like(out))).contiguous()


def _deeper(source: dict[str, torch.Tensor], n: int, m: int) -> dict[str, torch.Tensor]:
    """``source`` (``n`` stages) renamed onto ``m`` stages as the module docstring says."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not key.startswith(_STAGES):
            mapped[key] = value
            continue
        index, rest = key[len(_STAGES):].split(".", 1)
        i = int(index)
        if i < n - 1:
            mapped[key] = value
        else:  # the old last stage: it stays last, and its update part seeds every new middle stage
            mapped[f"{_STAGES}{m - 1}.{rest}"] = value
            if not rest.startswith(("fusion.", "fusion_updator.")):
                for j in range(n - 1, m - 1):
                    mapped[f"{_STAGES}{j}.{rest}"] = value
    return mapped


def copy_sources(channels: int) -> torch.Tensor:
    """For each of ``2 * channels`` wide channels, the narrow channel it copies (int64 [2C]).

    Wide group ``g`` (of :func:`group_count` groups) is narrow group ``g mod G``, position ``p`` in it narrow
    position ``p mod s``: 16 -> 32 channels (4 -> 8 groups of 4) repeats the whole layout, 128 -> 256 (32
    groups of 4 -> 32 groups of 8) repeats each group's channels inside it. Either way every narrow channel
    appears exactly twice and every wide group's statistics are its narrow group's.
    """
    groups, wide_groups = group_count(channels), group_count(2 * channels)
    size, wide_size = channels // groups, 2 * channels // wide_groups
    j = torch.arange(2 * channels)
    return (j // wide_size % groups) * size + (j % wide_size) % size


def _widened(key: str, value: torch.Tensor, shape: torch.Size, noise: float,
             generator: torch.Generator) -> torch.Tensor:
    out = value
    copy: torch.Tensor | None = None  # widened output channels that are a second occurrence
    for dim, (old, new) in enumerate(zip(value.shape, shape, strict=True)):
        if new == old:
            continue
        if new != 2 * old:
            raise ValueError(f"{key}: dimension {dim} goes {old} -> {new}, not twice as wide")
        sources = copy_sources(old)
        out = out.index_select(dim, sources)
        if dim == 1:  # a layer's input channels: each narrow input now arrives twice
            out = out / 2
        else:
            copy = torch.ones(new, dtype=torch.bool)
            copy[np.unique(sources.numpy(), return_index=True)[1]] = False
    if out.dim() == 4 and noise > 0 and copy is not None:
        # Only the copies get noise: each channel's first occurrence keeps the narrow network's weights.
        jitter = torch.randn(out.shape, generator=generator) * noise * float(value.std())
        out = out + torch.where(copy[:, None, None, None], jitter, torch.zeros_like(out))
    return out.contiguous()
