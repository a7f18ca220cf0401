"""PyTorch backend: the FrameNet on CPU or CUDA (the reference the other backends are checked against).

Options for a GPU: ``precision`` runs the network under autocast (fp16 or bf16 on either device, fp16 being
the GPU's; the panoptic assembly stays in float32 inside FrameNet, and every output is float32 as the
contract says), and
``cuda_graph`` records the whole per-frame forward once and replays it, which removes the launch overhead
of its several hundred small kernels. The graph is possible because the network is a pure function of
static-shape tensors with no host synchronisation inside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from vknet_model.backends.base import Backend, BackendError
from vknet_model.checkpoint import load_checkpoint
from vknet_model.config import VKNetConfig
from vknet_model.contract import ModelContract, contract_for
from vknet_model.network import FrameNet, VKNetOutput, build_frame_net

_LOG = logging.getLogger(__name__)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
GRAPH_WARM_UP = 3  # eager forwards on a side stream before capture (cuDNN picks its algorithms, caches fill)

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], VKNetOutput]


class TorchBackend(Backend):
    """The eager FrameNet, optionally under autocast and replayed from a CUDA graph.

    Args:
        precision: "fp32", "fp16" or "bf16" (the last two through autocast).
        cuda_graph: record the forward on the first call and replay it after (CUDA only).
    """

    name = "torch"

    def __init__(self, frame_net: FrameNet, config: VKNetConfig, device: str | torch.device = "cpu", *,
                 precision: str = "fp32", cuda_graph: bool = False) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' requested but this PyTorch has no usable CUDA device")
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if cuda_graph and self.device.type != "cuda":
            raise BackendError(f"cuda_graph needs a CUDA device, got {self.device}")
        self.frame_net = frame_net.eval().to(self.device)
        self.contract: ModelContract = contract_for(config)
        self.precision = precision
        self.cuda_graph = cuda_graph
        self._graph: _GraphedForward | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", *, precision: str = "fp32",
                        cuda_graph: bool = False) -> TorchBackend:
        cfg, net, _ = load_checkpoint(path)
        _LOG.info("loaded checkpoint %s (config %s)", path, cfg.hash())
        return cls(build_frame_net(cfg, net), cfg, device, precision=precision, cuda_graph=cuda_graph)

    def _forward(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
                 thresholds: torch.Tensor) -> VKNetOutput:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.frame_net(image, prev_kernels, use_prev, thresholds)
        with torch.autocast(self.device.type, dtype=dtype):
            return self.frame_net(image, prev_kernels, use_prev, thresholds)

    @torch.inference_mode()
    def infer(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
              thresholds: torch.Tensor) -> VKNetOutput:
        inputs = (image, prev_kernels, use_prev, thresholds)
        if not self.cuda_graph:
            return self._forward(*inputs)
        # Streams, capture and replay act on the current CUDA device: make it this backend's (cuda:N).
        with torch.cuda.device(self.device):
            if self._graph is None:
                self._graph = _GraphedForward(self._forward, inputs, self.device)
                _LOG.info("recorded the %s forward as a CUDA graph on %s", self.precision, self.device)
            return self._graph(*inputs)

    def describe(self) -> str:
        h, w = self.contract.input_size
        options = self.precision + (", CUDA graph" if self.cuda_graph else "")
        return f"{self.name} on {self.device} ({h}x{w}, {options}, config {self.contract.config.hash()})"


class _GraphedForward:
    """One CUDA graph of ``forward`` on static input buffers.

    Each call copies its inputs into the buffers, replays the graph and returns clones of the graph's output
    buffers, so results stay valid after the next call, as eager ones do (the clones are device-to-device
    copies of a few hundred KB).
    """

    def __init__(self, forward: Forward, example: tuple[torch.Tensor, ...], device: torch.device) -> None:
        self._inputs = tuple(t.detach().clone() for t in example)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARM_UP):
                forward(*self._inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = forward(*self._inputs)

    def __call__(self, *inputs: torch.Tensor) -> VKNetOutput:
        for buffer, value in zip(self._inputs, inputs, strict=True):
            buffer.copy_(value)
        self._graph.replay()
        return VKNetOutput(*(t.clone() for t in self._outputs))
