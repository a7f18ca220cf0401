"""An exponential moving average of the weights, kept beside the network being trained (``train.ema_decay``).

Why: at batch 1 the weights wander around a better point than any one iterate. Three fine-tunes of the
bundled model that each scored like their start averaged (``vknet average``) to +0.009 STQ; within one run,
at a constant learning rate, the running average scored +0.005 above the same run's raw weights (cycle 20,
``vknet_model/assets/README.md``), at no inference cost and with nothing but one more copy of the weights.

The update after ``n`` earlier ones uses the decay ``min(decay, n / (n + 1))``: the average is the plain mean
of the iterates so far until that would weigh the old average more than ``decay`` (~1 / (1 - decay)
updates), then exponential. So the weights the run starts from (random, or another run's) are forgotten at
the first update instead of fading over ~1 / (1 - decay) iterations. Floating-point buffers (BatchNorm running
statistics) are averaged like the parameters; integer buffers (BatchNorm batch counters) are copied.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import torch
from torch import nn

Net = TypeVar("Net", bound=nn.Module)


class WeightAverage(Generic[Net]):
    """The moving average of ``net``'s parameters and buffers, as a network of the same structure.

    Args:
        net: the network being trained; its current weights start the average.
        decay: the largest weight of the old average per update, in [0, 1).
    """

    def __init__(self, net: Net, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"the weight average's decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.net: Net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses (the running mean's until it reaches ``decay``)."""
        return min(self.decay, self.updates / (self.updates + 1))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards ``net``'s current weights (call after every optimiser step)."""
        d = self.current_decay()
        source = net.state_dict()
        for name, avg in self.net.state_dict().items():
            value = source[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(value.to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` stores to resume the average exactly (weights on the CPU)."""
        return {"decay": self.decay, "updates": self.updates,
                "weights": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved average; its decay setting may differ (a run resumed under a changed config)."""
        self.net.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
