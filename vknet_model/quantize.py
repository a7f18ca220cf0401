"""Static post-training INT8 quantisation of an exported per-frame network (ONNX Runtime's tools, QDQ format).

The fp32 export stays the reference: calibration frames go through it in video order (each frame's
``prev_kernels`` are the previous frame's output, as in the pipeline), so the activation ranges seen are
those of tracking, not of single images. Weights are quantised per output channel (int8), activations per
tensor (uint8) over the 99.999th percentile range of the calibration frames: with min-max ranges (one
outlier stretches a tensor's scale) the bundled model kept 93.9 % of track identities and lost 0.009 STQ,
with percentile ranges 96.1 % and no STQ (64 calibration frames, ``benchmarks/int8_accuracy.py``).

Which node types are quantised was decided by measurement on the bundled model (``benchmarks/int8_accuracy.py``,
figures in ``benchmarks/RESULTS.md``): the convolutions (57 % of the fp32 forward) are; the kernel update's
MatMuls (a few per cent of the time) are not: their outputs are the kernels the tracker compares frame to
frame and the next frame's input, and quantising them too cost 0.030 STQ against 0.006 (min-max ranges);
everything after the logits (the panoptic assembly: argmax, comparisons, gathers) and the normalisations
stay float, as ONNX Runtime leaves any op not listed. The
graph's inputs and outputs keep their types, so the contract's I/O, the pipeline and every backend are
unchanged; the contract gains ``precision``, ``calibration`` and ``fp32_sha256``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vknet_model.contract import ContractError, ModelContract, contract_path_for, file_sha256, load_verified_contract
from vknet_model.errors import VKNetError
from vknet_model.preprocess import letterbox

_LOG = logging.getLogger(__name__)
QUANTIZED_OP_TYPES = ("Conv",)
CALIBRATION_METHODS = ("percentile", "minmax")
INT8_SUFFIX = ".int8.onnx"


class QuantizeError(VKNetError, ValueError):
    """A model or calibration data that cannot be quantised; the message says why."""


def int8_path_for(fp32_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (where ``vknet quantize`` writes by default and where
    ``precision int8`` looks)."""
    path = Path(fp32_path)
    return path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)


def calibration_feeds(fp32_path: Path, contract: ModelContract, sequences: Iterable[Sequence[np.ndarray]],
                      on_frame: Callable[[], None] | None = None) -> list[dict[str, np.ndarray]]:
    """The network inputs of every calibration frame (RGB uint8 [H, W, 3] of any size, grouped in videos),
    with the kernels fed back through the fp32 model within each video."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    post = contract.config.postprocess
    thresholds = np.asarray([post.instance_score_thr, post.overlap_thr, post.mask_thr], np.float32)
    kernels_shape = contract.inputs[1].shape
    feeds: list[dict[str, np.ndarray]] = []
    for frames in sequences:
        prev = np.zeros(kernels_shape, np.float32)
        for t, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
                raise QuantizeError(f"calibration frames must be RGB uint8 [H, W, 3], got {frame.dtype} "
                                    f"{list(frame.shape)}")
            image = letterbox(frame, contract.input_size)[0]
            feed = {"image": image, "prev_kernels": prev, "use_prev": np.asarray([float(t > 0)], np.float32),
                    "thresholds": thresholds}
            feeds.append(feed)
            prev = session.run(output_names, feed)[output_names.index("kernels")]
            if on_frame is not None:
                on_frame()
    if not feeds:
        raise QuantizeError("no calibration frames: the data source gave none")
    return feeds


def quantize_model(fp32_path: str | Path, out_path: str | Path, sequences: Iterable[Sequence[np.ndarray]], *,
                   calibration: str, op_types: Sequence[str] = QUANTIZED_OP_TYPES, method: str = "percentile",
                   on_frame: Callable[[], None] | None = None) -> ModelContract:
    """Quantise the fp32 export ``fp32_path`` into ``out_path`` (with its ``model.json``), calibrated on
    ``sequences``; ``calibration`` says what they were (it goes into the contract). ``method``: activation
    ranges from the calibration frames' min-max or their 99.999th percentile (outliers clipped).

    Raises:
        QuantizeError: the model is not a verified fp32 export, or there is no calibration frame.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    try:
        contract, fp32_sha = load_verified_contract(fp32_path)
    except ContractError as exc:
        raise QuantizeError(f"cannot quantise {fp32_path}: {exc}") from exc
    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if contract.precision != "fp32":
        raise QuantizeError(f"{fp32_path} is already {contract.precision}: quantise the fp32 export it came from")
    if out_path.resolve() == fp32_path.resolve():
        raise QuantizeError("the int8 model must not overwrite the fp32 one: choose another --out")
    feeds = calibration_feeds(fp32_path, contract, sequences, on_frame)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    advice = _DropAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="vknet_quantize_") as scratch:
            # ORT writes an augmented copy of the model for calibration next to its working files.
            written = Path(scratch) / out_path.name
            quantize_static(str(fp32_path), str(written), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(op_types),
                            calibrate_method=CalibrationMethod.MinMax if method == "minmax" else
                            CalibrationMethod.Percentile,
                            extra_options={"CalibTensorRangeSymmetric": False, "CalibPercentile": 99.999})
            shutil.move(written, out_path)  # /tmp may be another file system
    finally:
        logging.getLogger().removeFilter(advice)
    quantized = replace(contract, onnx_sha256=file_sha256(out_path), precision="int8",
                        calibration=f"{calibration}; {len(feeds)} frames; {method}; quantised {', '.join(op_types)}",
                        fp32_sha256=fp32_sha)
    check_quantized_graph(out_path, op_types)
    quantized.save(contract_path_for(out_path))
    _LOG.info("wrote %s (%.1f MB) and its contract", out_path, out_path.stat().st_size / 1e6)
    return quantized


class _DropAdvice(logging.Filter):
    """ONNX Runtime's quantiser logs "Please consider pre-processing before quantization" twice per call on
    the root logger: advice about its shape-inference step, which this graph (static shapes, BatchNorm folded
    at export) does not need. Everything else it logs passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider")


def float_ops_left(onnx_path: str | Path, op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> list[str]:
    """Names of the ``op_types`` nodes whose weight does not come through a DequantizeLinear (left float)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    made_by = {output: node for node in graph.node for output in node.output}
    left = []
    for node in graph.node:
        if node.op_type in op_types and len(node.input) > 1:
            producer = made_by.get(node.input[1])
            if producer is None or producer.op_type != "DequantizeLinear":
                left.append(node.name or node.output[0])
    return left


def check_quantized_graph(onnx_path: str | Path, op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> None:
    """Raise QuantizeError unless the graph has QDQ pairs and every ``op_types`` node reads int8 weights."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    kinds = {node.op_type for node in graph.node}
    if not {"QuantizeLinear", "DequantizeLinear"} <= kinds:
        raise QuantizeError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: it is not a QDQ int8 graph")
    left = float_ops_left(onnx_path, op_types)
    if left:
        raise QuantizeError(f"{onnx_path}: {len(left)} {'/'.join(op_types)} node(s) still have float weights "
                            f"(e.g. {left[:3]})")


def graph_precision(onnx_path: str | Path) -> str:
    """"int8" when the graph holds DequantizeLinear nodes, else "fp32" (what a backend checks the contract's
    ``precision`` against: a contract copied beside the other file is caught here)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return "int8" if any(node.op_type == "DequantizeLinear" for node in graph.node) else "fp32"
