"""The one interface every inference backend offers (torch, ONNX Runtime, TensorRT)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from vknet_model.contract import ModelContract
from vknet_model.errors import VKNetError
from vknet_model.network import VKNetOutput


class BackendError(VKNetError, RuntimeError):
    """A backend that cannot be created or run; the message says why and what to try instead."""


class Backend(ABC):
    """Runs the per-frame network; the caller owns the temporal state (``prev_kernels``).

    Attributes:
        name: one of ``vknet_model.backends.BACKEND_NAMES``.
        contract: I/O, config and class names of the loaded model.
        device: where inputs are expected and outputs live.
    """

    name: str
    contract: ModelContract
    device: torch.device

    @abstractmethod
    def infer(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
              thresholds: torch.Tensor) -> VKNetOutput:
        """
        Args:
            image: uint8 [1, 3, H, W] RGB at the contract's input size, on ``device``.
            prev_kernels: float32 [1, N, C] on ``device`` (the previous call's ``kernels`` output).
            use_prev: float32 [1], 1.0 when ``prev_kernels`` come from the previous frame of the same video.
            thresholds: float32 [3] panoptic assembly thresholds (``network.threshold_tensor``).

        Returns:
            VKNetOutput of tensors on ``device``.
        """

    def initial_kernels(self) -> torch.Tensor:
        """Placeholder ``prev_kernels`` for the first frame (ignored by the network when use_prev is 0)."""
        spec = next(s for s in self.contract.inputs if s.name == "prev_kernels")
        return torch.zeros(spec.shape, dtype=torch.float32, device=self.device)

    def describe(self) -> str:
        h, w = self.contract.input_size
        return f"{self.name} on {self.device} ({h}x{w}, config {self.contract.config.hash()})"
