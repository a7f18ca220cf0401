"""Inference backends behind one interface, and the factory that picks one for a model file.

Importing this package loads no torch: command-line parsers and the node's settings read the backend names
below, and ``Backend`` / ``BackendError`` (which need torch) are imported on first use.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vknet_model.backends.base import Backend, BackendError

_LOG = logging.getLogger(__name__)
ONNX_BACKENDS = ("onnxruntime", "tensorrt")   # they run an exported .onnx with its model.json
BACKEND_NAMES = ("torch", *ONNX_BACKENDS)     # every backend (``Backend.name``)
BACKENDS = ("auto", *BACKEND_NAMES)           # what a user may ask for; auto picks by model file and device
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def __getattr__(name: str) -> Any:
    if name in ("Backend", "BackendError"):
        from vknet_model.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "cpu", *,
                 ort_spin_wait: bool = True, torch_precision: str = "fp32", cuda_graph: bool = False) -> Backend:
    """Open ``model_path`` with the requested backend.

    A checkpoint (.pt) runs on the torch backend; an ONNX file on TensorRT or ONNX Runtime. ``auto`` takes
    TensorRT for an ONNX file when it is installed and ``device`` is cuda, else ONNX Runtime, and says so.
    ``torch_precision`` and ``cuda_graph`` are the torch backend's options (see ``TorchBackend``); asking for
    them with an ONNX file is an error rather than a silent no-op.
    """
    import torch

    from vknet_model.backends.base import BackendError

    model_path = Path(model_path)
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not model_path.exists():
        raise BackendError(f"model file not found: {model_path}")
    is_checkpoint = model_path.suffix in CHECKPOINT_SUFFIXES
    if is_checkpoint:
        if backend in ONNX_BACKENDS:
            raise BackendError(f"{model_path} is a PyTorch checkpoint: the {backend} backend needs an ONNX file "
                               f"(`vknet export --checkpoint {model_path} --out model.onnx`)")
        from vknet_model.backends.torch_backend import TorchBackend

        return TorchBackend.from_checkpoint(model_path, device, precision=torch_precision, cuda_graph=cuda_graph)
    if torch_precision != "fp32" or cuda_graph:
        raise BackendError(f"torch_precision and cuda_graph apply to the torch backend (a .pt checkpoint); "
                           f"{model_path} runs on ONNX Runtime or TensorRT, whose precision is fixed by the file "
                           f"or the engine build (`vknet engine --fp16`)")
    if model_path.suffix != ".onnx":
        raise BackendError(f"{model_path}: expected a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) or an .onnx file")
    if backend == "torch":
        raise BackendError(f"{model_path} is an ONNX file: the torch backend needs the training checkpoint (.pt)")
    if backend == "auto":
        trt_ready = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
        backend = "tensorrt" if device.startswith("cuda") and trt_ready else "onnxruntime"
        if device.startswith("cuda") and not trt_ready:
            _LOG.warning("TensorRT is not available here: falling back to ONNX Runtime")
    if backend == "tensorrt":
        from vknet_model.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model_path, device_index=int(device.split(":")[1]) if ":" in device else 0)
    from vknet_model.backends.onnxruntime_backend import OnnxRuntimeBackend

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
    return OnnxRuntimeBackend(model_path, providers=providers, spin_wait=ort_spin_wait)


__all__ = ["BACKENDS", "BACKEND_NAMES", "CHECKPOINT_SUFFIXES", "ONNX_BACKENDS", "Backend", "BackendError",
           "open_backend"]
