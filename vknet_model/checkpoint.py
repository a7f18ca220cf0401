"""Checkpoint files: weights plus the config, class names and version they belong to.

Loading never trusts a file: a missing, truncated or foreign file, or weights that do not fit the stored
config, raise :class:`CheckpointError` with what is wrong and what to do about it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vknet_model import __version__
from vknet_model.config import ConfigError, VKNetConfig, config_from_dict, values_hash
from vknet_model.errors import VKNetError
from vknet_model.network import VKNet, build_model

CHECKPOINT_FORMAT = "vknet-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(VKNetError, ValueError):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path: str | Path, net: VKNet, cfg: VKNetConfig, **extra: Any) -> None:
    """Write atomically (temp file + rename), so an interrupted save never leaves a broken checkpoint.

    ``extra`` holds plain values (training step, optimiser state, metrics) stored beside the weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "vknet_version": __version__,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "class_names": list(cfg.data.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the checkpoint dictionary (weights on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails on foreign files in many ways (a text file: IndexError)
        first_line = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise CheckpointError(f"{path} is not a readable vknet checkpoint (truncated, corrupt, or another kind of "
                              f"file): {exc.__class__.__name__}: {first_line}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a vknet checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported "
                              f"(this vknet reads version {CHECKPOINT_VERSION})")
    return payload


def load_checkpoint(path: str | Path) -> tuple[VKNetConfig, VKNet, dict[str, Any]]:
    """Rebuild the network from a checkpoint.

    Returns:
        (config, network in eval mode on the CPU, the whole checkpoint dictionary).
    """
    payload = read_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"], source=f"{path}:config")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: stored config is invalid for this vknet version: {exc}") from exc
    if values_hash(payload["config"]) != payload.get("config_hash"):
        raise CheckpointError(f"{path}: stored config does not match its hash (edited or damaged)")
    net = build_model(cfg)
    try:
        missing, unexpected = net.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path}: weights do not fit the stored config ({first} ...)") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return cfg, net.eval(), payload
