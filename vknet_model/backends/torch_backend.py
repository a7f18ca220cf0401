"""PyTorch backend: the eager FrameNet on CPU or CUDA (the reference the other backends are checked against)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vknet_model.backends.base import Backend, BackendError
from vknet_model.checkpoint import load_checkpoint
from vknet_model.config import VKNetConfig
from vknet_model.contract import ModelContract, contract_for
from vknet_model.network import FrameNet, VKNetOutput, build_frame_net

_LOG = logging.getLogger(__name__)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, frame_net: FrameNet, config: VKNetConfig, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' requested but this PyTorch has no usable CUDA device")
        self.frame_net = frame_net.eval().to(self.device)
        self.contract: ModelContract = contract_for(config)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchBackend:
        cfg, net, _ = load_checkpoint(path)
        _LOG.info("loaded checkpoint %s (config %s)", path, cfg.hash())
        return cls(build_frame_net(cfg, net), cfg, device)

    @torch.inference_mode()
    def infer(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
              thresholds: torch.Tensor) -> VKNetOutput:
        return self.frame_net(image, prev_kernels, use_prev, thresholds)
