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
# What a user may ask a model to run in (see resolve_precision); auto: as the file is (an int8 export in int8).
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def __getattr__(name: str) -> Any:
    if name in ("Backend", "BackendError"):
        from vknet_model.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(model_path: str | Path, precision: str, device: str = "cpu") -> tuple[Path, str]:
    """The file to open and the torch precision for a model asked to run in ``precision``.

    int8 runs the quantised graph: ``model.int8.onnx`` beside an fp32 ``model.onnx`` (``vknet quantize`` writes
    it), or the file itself when its contract already says int8. fp32 refuses an int8 file rather than run it
    silently in int8. bf16 runs a checkpoint under torch autocast, on a CPU only where bf16 is native (emulated
    bf16 is several times slower than fp32); ONNX Runtime has no bf16 CPU kernels.

    Raises:
        BackendError: the precision cannot be had with this model, file or CPU (the message says why).
    """
    from vknet_model.backends.base import BackendError
    from vknet_model.contract import ContractError, ModelContract, contract_path_for
    from vknet_model.quantize import int8_path_for

    model_path = Path(model_path)
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return model_path, "fp32"
    if model_path.suffix in CHECKPOINT_SUFFIXES:
        if precision == "int8":
            raise BackendError(f"{model_path} is a checkpoint: int8 runs an exported, quantised graph "
                               f"(`vknet export`, then `vknet quantize`)")
        if precision == "bf16" and not device.startswith("cuda") and not cpu_has_native_bf16():
            raise BackendError("bf16 needs a CPU with native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo); this "
                               "one would emulate it, slower than fp32: use fp32, or int8 with an exported model")
        return model_path, precision if precision == "bf16" else "fp32"
    if precision == "bf16":
        raise BackendError(f"{model_path}: ONNX Runtime has no bf16 CPU kernels; bf16 runs a checkpoint (.pt) on "
                           f"the torch backend (or use int8: `vknet quantize`)")
    try:
        own = ModelContract.load(contract_path_for(model_path)).precision
    except ContractError:
        return model_path, "fp32"  # the backend reports the missing or broken contract in its own words
    if precision == own:
        return model_path, "fp32"
    if precision == "fp32":
        raise BackendError(f"{model_path} is an {own} model: give its fp32 export, or ask for precision {own}")
    quantized = int8_path_for(model_path)
    if not quantized.is_file():
        raise BackendError(f"no int8 model beside {model_path} ({quantized} is missing): run `vknet quantize --model "
                           f"{model_path}`")
    return quantized, "fp32"


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "cpu", *,
                 ort_spin_wait: bool = True, torch_precision: str = "fp32", cuda_graph: bool = False,
                 precision: str = "auto") -> Backend:
    """Open ``model_path`` with the requested backend.

    A checkpoint (.pt) runs on the torch backend; an ONNX file on TensorRT or ONNX Runtime. ``auto`` takes
    TensorRT for an ONNX file when it is installed and ``device`` is cuda, else ONNX Runtime, and says so.
    ``torch_precision`` and ``cuda_graph`` are the torch backend's options (see ``TorchBackend``); asking for
    them with an ONNX file is an error rather than a silent no-op. ``precision`` picks the file and settings
    through :func:`resolve_precision`.
    """
    import torch

    from vknet_model.backends.base import BackendError

    model_path = Path(model_path)
    if precision != "auto" and model_path.exists():
        model_path, autocast = resolve_precision(model_path, precision, device)
        if autocast != "fp32":
            if torch_precision not in ("fp32", autocast):
                raise BackendError(f"precision {precision} and torch_precision {torch_precision} disagree")
            torch_precision = autocast
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
