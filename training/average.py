"""Average the weights of several fine-tunes of one network (a uniform "model soup", Wortsman et al. 2022).

Runs that start from the same weights and differ only in their seed, data or a loss weight end in the same
basin; their mean often scores above every one of them, where picking the best run only picks noise. On this
project's CPU, three fine-tunes of the cycle-14 weights scored 0.769-0.775 over 70 held-out sequences against
their start's 0.7755, and the mean of the four 0.785 (vknet_model/assets/README.md).

The mean is only meaningful between fine-tunes of a common start: this refuses networks of another shape or
another model section, but cannot tell two unrelated trainings of the same network apart (their mean is
noise). GroupNorm and the kernel head hold no running statistics, so averaging the parameters is the whole
job; BatchNorm running statistics are averaged like the weights (frozen BN: fixed since the start anyway),
and integer buffers (BatchNorm's batch counter) are the first file's: nothing at inference reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.trainer import scenes_trained_on
from vknet_model.checkpoint import CheckpointError, load_checkpoint
from vknet_model.config import VKNetConfig
from vknet_model.network import VKNet


def average_checkpoints(paths: Sequence[Path]) -> tuple[VKNetConfig, VKNet, dict[str, Any]]:
    """The uniform mean of the checkpoints' weights.

    Returns:
        (the first checkpoint's config, the averaged network, what to store beside it: ``step`` and
        ``scenes_after`` the largest of the ingredients', so that a fine-tune from the mean still starts its
        synthetic stream past every scene any of them saw; ``train_seconds`` their sum; ``averaged_from``
        the files). The first file's config is kept whole: its inference thresholds are the ones used.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    cfg, net, first = load_checkpoint(paths[0])
    model_section = cfg.to_dict()["model"]
    total = {k: v.detach().double().clone() for k, v in net.state_dict().items()}
    payloads = [first]
    for path in paths[1:]:
        other_cfg, other, payload = load_checkpoint(path)
        differing = sorted(k for k, v in other_cfg.to_dict()["model"].items() if model_section.get(k) != v)
        if differing:
            raise CheckpointError(f"{path} is another network than {paths[0]} (model settings differ: "
                                  f"{', '.join(differing)}): only fine-tunes of one network can be averaged")
        for key, value in other.state_dict().items():
            if value.is_floating_point():
                total[key] += value.double()
        payloads.append(payload)
    state = net.state_dict()
    mean = {k: (total[k] / len(paths)).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(mean)
    extra: dict[str, Any] = {
        "step": max(int(p.get("step", 0)) for p in payloads),
        "train_seconds": float(sum(float(p.get("train_seconds", 0.0)) for p in payloads)),
        "scenes_after": max(scenes_trained_on(p) for p in payloads),
        "averaged_from": [str(p) for p in paths],
    }
    return cfg, net, extra
