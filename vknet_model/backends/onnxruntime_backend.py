"""ONNX Runtime backend (CPU here; the CUDA / TensorRT execution providers where they are installed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from vknet_model.backends.base import Backend, BackendError
from vknet_model.contract import TensorSpec, check_io, load_verified_contract
from vknet_model.network import VKNetOutput
from vknet_model.quantize import graph_precision

_LOG = logging.getLogger(__name__)
_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int32)": "int32",
               "tensor(bool)": "bool", "tensor(int64)": "int64", "tensor(float16)": "float16"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, providers: list[str] | None = None, threads: int = 0,
                 spin_wait: bool = True) -> None:
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise BackendError(f"ONNX model not found: {onnx_path}")
        self.contract, _ = load_verified_contract(onnx_path)
        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"ONNX Runtime providers {unknown} are not available here (have {available})")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        if not spin_wait:
            # Busy-waiting threads make a lone forward ~13 % faster but steal the cores that DDS and the
            # Python stages around the network need when they share a small CPU (the node's case).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception classes for every kind of bad file
            raise BackendError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
        graph = graph_precision(onnx_path)  # a file ONNX Runtime loaded parses
        if graph != self.contract.precision:
            raise BackendError(f"{onnx_path} is an {graph} graph but its contract says {self.contract.precision} "
                               f"(contract edited by hand?): re-export or re-quantise it")
        self.device = torch.device("cuda" if providers[0] == "CUDAExecutionProvider" else "cpu")
        io = [[TensorSpec(v.name, tuple(v.shape), _ORT_DTYPES.get(v.type, v.type)) for v in values]
              for values in (self.session.get_inputs(), self.session.get_outputs())]
        check_io(self.contract, io[0], io[1], what=str(onnx_path))
        self._output_names = [spec.name for spec in self.contract.outputs]
        _LOG.info("onnxruntime session for %s (providers %s, %d threads)", onnx_path,
                  self.session.get_providers(), options.intra_op_num_threads)

    def describe(self) -> str:
        return super().describe() + (", int8" if self.contract.precision == "int8" else "")

    def infer(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
              thresholds: torch.Tensor) -> VKNetOutput:
        feeds = {"image": image.cpu().numpy(), "prev_kernels": prev_kernels.cpu().numpy(),
                 "use_prev": use_prev.cpu().numpy(), "thresholds": thresholds.cpu().numpy()}
        results = self.session.run(self._output_names, feeds)
        return VKNetOutput(*(torch.from_numpy(np.asarray(r)) for r in results))
