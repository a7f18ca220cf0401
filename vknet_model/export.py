"""Export the per-frame network to ONNX and write its contract (``model.json``) beside it.

The graph is checked after export: static shapes everywhere, and none of the operators that break
TensorRT or fp16 deployment (Einsum, NonZero, a Conv whose weights are computed at run time).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from vknet_model.config import VKNetConfig
from vknet_model.contract import ModelContract, TensorSpec, check_io, contract_for, contract_path_for, file_sha256
from vknet_model.errors import VKNetError
from vknet_model.network import INPUT_NAMES, OUTPUT_NAMES, FrameNet

_LOG = logging.getLogger(__name__)
FORBIDDEN_OPS = frozenset({"Einsum", "NonZero", "Loop", "If", "Unique", "Compress"})
_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT16: "float16",
}


class ExportError(VKNetError, RuntimeError):
    """The exported graph violates the deployment contract."""


def _value_specs(values: list[onnx.ValueInfoProto]) -> list[TensorSpec]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = []
        for dim in tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                raise ExportError(f"{value.name} has a dynamic dimension {dim.dim_param!r}: the graph must be static")
            dims.append(dim.dim_value)
        specs.append(TensorSpec(value.name, tuple(dims), _ONNX_DTYPES.get(int(tensor_type.elem_type), "unknown")))
    return specs


def onnx_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Static input and output specs of an ONNX graph (raises ExportError on a dynamic dimension)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return _value_specs(inputs), _value_specs(list(model.graph.output))


def check_graph(model: onnx.ModelProto) -> None:
    """Reject operators that TensorRT or static deployment cannot take."""
    ops = {node.op_type for node in model.graph.node}
    bad = sorted(ops & FORBIDDEN_OPS)
    if bad:
        raise ExportError(f"exported graph contains forbidden operators {bad}")
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] not in constants:
            raise ExportError(f"Conv {node.name} has run-time weights (a per-sample convolution)")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's helper libraries log hundreds of INFO lines per export; keep only their warnings."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, not ours to fix
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(frame_net: FrameNet, cfg: VKNetConfig, out_path: str | Path, *,
                opset: int | None = None) -> ModelContract:
    """Export ``frame_net`` (eval mode, CPU) to ``out_path`` and write the contract next to it.

    Returns:
        The contract written to ``<out>.json``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    opset = opset or cfg.export.opset
    if opset < 17:
        raise ExportError(f"opset {opset} < 17: LayerNormalization needs opset 17 for TensorRT")
    expected = contract_for(cfg)
    example = tuple(torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype)) for spec in expected.inputs)
    frame_net = frame_net.eval().cpu()
    _LOG.info("exporting %s (input %dx%d, opset %d)", out_path, cfg.model.input_height, cfg.model.input_width, opset)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(frame_net, example, str(out_path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=True, verbose=False,
                          external_data=False)
    model = onnx.load(str(out_path))
    onnx.checker.check_model(model)
    check_graph(model)
    inputs, outputs = onnx_io(model)
    contract = contract_for(cfg, onnx_sha256=file_sha256(out_path), opset=opset)
    check_io(contract, inputs, outputs, what=str(out_path))
    contract.save(contract_path_for(out_path))
    _LOG.info("wrote %s (%.1f MB) and %s", out_path, out_path.stat().st_size / 1e6, contract_path_for(out_path))
    return contract
