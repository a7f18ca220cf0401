"""Start a deeper network from a trained shallower one: more kernel update stages, everything else kept.

A run from scratch costs days on a CPU; an extra update stage initialised from trained ones starts where the
smaller network stopped (its masks and classes are the old ones from the first step) and only has to learn
what the added refinement buys. K-Net's stages all have the same shape, so a stage's weights fit any other;
only the last stage carries Video K-Net's kernel fusion.

Mapping for ``n`` -> ``m`` stages (``m > n``): new stage ``i < n - 1`` is old stage ``i``; the new middle
stages ``n - 1 .. m - 2`` are copies of the old last stage without its fusion blocks; the new last stage is
the old last stage, fusion included. Each new middle stage therefore repeats the old network's final
refinement, which the losses on every stage then specialise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vknet_model.network import VKNet

_STAGES = "stages."


@dataclass(frozen=True)
class GrowthReport:
    """What :func:`grow_into` did, for the training log."""

    old_stages: int
    new_stages: int
    copied: tuple[int, ...]  # new stage indices initialised from the old last stage's update (no fusion)

    def summary(self) -> str:
        return (f"grew {self.old_stages} -> {self.new_stages} update stages: stages "
                f"{', '.join(map(str, self.copied))} start as copies of the old last stage")


def grow_into(net: VKNet, old: VKNet) -> GrowthReport:
    """Load ``old``'s weights into ``net``, which has more update stages and is otherwise the same network.

    Raises:
        ValueError: ``net`` does not have more stages than ``old``, or some other weight differs in shape.
    """
    n, m = len(old.stages), len(net.stages)
    if m <= n:
        raise ValueError(f"growing needs more update stages than the checkpoint's {n}, not {m}")
    source = old.state_dict()
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
    target = net.state_dict()
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    wrong = sorted(k for k in set(mapped) & set(target) if mapped[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        raise ValueError("the networks differ beyond their number of stages: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shape {wrong[:3]}")
    net.load_state_dict(mapped)
    return GrowthReport(old_stages=n, new_stages=m, copied=tuple(range(n - 1, m - 1)))
